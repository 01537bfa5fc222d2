// A position in the primary's history: byte offset `pos` inside logfile number `seq`.
export interface LogLocation {
  readonly seq: number;
  readonly pos: number;
}

export function compareLocations(a: LogLocation, b: LogLocation): number {
  return a.seq !== b.seq ? a.seq - b.seq : a.pos - b.pos;
}
