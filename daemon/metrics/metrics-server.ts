// `marsd --metrics ADDR:PORT`: an HTTP listener answering GET /metrics with the Prometheus
// text format (registry.ts). Off unless asked for; it only reads, so a scrape cannot change
// replication state, and nothing is computed between scrapes.
import { createServer, type Server } from 'node:http';
import type { MarsMetrics } from './registry.js';

export function parseListenAddress(spec: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(spec);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) throw new Error(`--metrics ${JSON.stringify(spec)}: expected ADDR:PORT, e.g. 127.0.0.1:9477`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

export class MetricsServer {
  private server: Server | undefined;

  constructor(private readonly metrics: MarsMetrics, private readonly log: (level: 'info' | 'warn', msg: string) => void) {}

  async listen(spec: string): Promise<{ host: string; port: number }> {
    const { host, port } = parseListenAddress(spec);
    const server = createServer((req, res) => {
      if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics here\n');
        return;
      }
      this.metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.metrics.registry.contentType }).end(text),
        (err: Error) => { this.log('warn', `metrics: ${err.message}`); res.writeHead(500).end(`${err.message}\n`); },
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => { server.off('error', reject); resolve(); });
    });
    this.server = server;
    const addr = server.address();
    const bound = typeof addr === 'object' && addr ? { host, port: addr.port } : { host, port };
    this.log('info', `metrics on http://${spec.startsWith('[') ? `[${host}]` : host}:${bound.port}/metrics`);
    return bound;
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await new Promise<void>((resolve) => { s.close(() => resolve()); s.closeAllConnections(); });
  }
}
