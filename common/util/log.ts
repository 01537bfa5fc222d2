// How every part reports: a level and one line of text. marsd's main writes the lines to
// stderr (with --quiet dropping info); tests collect them. One definition for the daemon, the
// NBD server and the peer protocol.
export type LogLevel = 'info' | 'warn' | 'error';

export type LogFn = (level: LogLevel, msg: string) => void;
