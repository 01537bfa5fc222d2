// Frame-aware tampering for FaultProxy (setFrameTamper): splits one direction of each proxied
// connection into peer-protocol frames (docs/protocol.md §2) and lets a test forward, drop,
// alter, replay or inject whole frames, the way a relay between two members could. The first
// `untaggedFrames` frames of a direction are the handshake's (no tag); every later frame
// carries the 16-byte tag of protocol version 2.
export const TAG_BYTES = 16;
/** hello + welcome from the server, auth from the client. */
export const HANDSHAKE_FRAMES = { down: 2, up: 1 } as const;

export interface TamperedFrame {
  /** Which proxied connection (1, 2, ... in accept order). */
  connection: number;
  /** The frame's index in its direction of that connection (0 = first handshake frame). */
  index: number;
  /** The whole frame: prefix, header, payload and (after the handshake) tag. */
  bytes: Buffer;
  headerBytes: number;
  payloadBytes: number;
}

/** Decide what goes on the wire instead of `frame`: [frame] forwards it, [] drops it. */
export type FrameEdit = (frame: TamperedFrame) => Buffer[];

/** One direction of one connection: whole frames out of arbitrary chunks. */
export class FrameSplitter {
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  private index = 0;

  constructor(private readonly connection: number, private readonly untaggedFrames: number, private readonly edit: FrameEdit) {}

  push(chunk: Buffer): Buffer[] {
    this.buffered.push(chunk);
    this.bufferedBytes += chunk.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.bufferedBytes < 8) break;
      const all = Buffer.concat(this.buffered);
      const headerBytes = all.readUInt32BE(0);
      const payloadBytes = all.readUInt32BE(4);
      const total = 8 + headerBytes + payloadBytes + (this.index >= this.untaggedFrames ? TAG_BYTES : 0);
      if (all.length < total) {
        this.buffered = [all];
        break;
      }
      const bytes = Buffer.from(all.subarray(0, total));
      const rest = all.subarray(total);
      this.buffered = rest.length > 0 ? [rest] : [];
      this.bufferedBytes = rest.length;
      out.push(...this.edit({ connection: this.connection, index: this.index++, bytes, headerBytes, payloadBytes }));
    }
    return out;
  }
}
