// The transport spec of userspace/transport-PEER: what parses, what is refused (anything that
// could reach ssh as an option or a shell), the canonical form, and how it turns into ssh's
// argument vector.
import t from 'tap';
import { describeTransport, formatTransportSpec, MAX_TRANSPORT_SPEC_CHARS, parseTransportSpec, TransportSpecError } from '../../common/cluster/transport-spec.js';
import { sshArgs } from '../../daemon/net/dial.js';
import { linkTarget } from '../../daemon/propagate/peer-manager.js';

t.test('valid specs parse and round-trip through the canonical form', async (t) => {
  const cases: Array<[string, unknown]> = [
    ['tcp', { kind: 'tcp' }],
    ['tcp,encrypt', { kind: 'tcp', encrypt: true }],
    ['tls', { kind: 'tls' }],
    ['tls,servername=alpha.example.org', { kind: 'tls', servername: 'alpha.example.org' }],
    ['ssh:alpha', { kind: 'ssh', host: 'alpha' }],
    ['ssh:root@10.0.0.1', { kind: 'ssh', user: 'root', host: '10.0.0.1' }],
    ['ssh:mars@alpha.example.org:2222', { kind: 'ssh', user: 'mars', host: 'alpha.example.org', port: 2222 }],
    ['ssh:root@[::1]:22', { kind: 'ssh', user: 'root', host: '::1', port: 22 }],
    ['ssh:[fe80::1]', { kind: 'ssh', host: 'fe80::1' }],
    ['ssh:root@127.0.0.1:65535,identity=/root/.ssh/id_mars,known-hosts=/etc/mars/known_hosts,command=/usr/bin/node /opt/mars/bin/marsd.js --stdio --run-dir /run/mars',
      { kind: 'ssh', user: 'root', host: '127.0.0.1', port: 65535, identityFile: '/root/.ssh/id_mars', knownHostsFile: '/etc/mars/known_hosts', command: ['/usr/bin/node', '/opt/mars/bin/marsd.js', '--stdio', '--run-dir', '/run/mars'] }],
    ['ssh:alpha,command=marsd --stdio --run-dir=/run/mars', { kind: 'ssh', host: 'alpha', command: ['marsd', '--stdio', '--run-dir=/run/mars'] }],
  ];
  for (const [text, want] of cases) {
    const spec = parseTransportSpec(text);
    t.same(spec, want, text);
    t.equal(formatTransportSpec(spec), text, `${text} is canonical`);
    t.same(parseTransportSpec(formatTransportSpec(spec)), spec, `${text} round-trips`);
  }
  // Option order does not matter; the canonical form orders them.
  t.equal(formatTransportSpec(parseTransportSpec('ssh:a,command=marsd --stdio,identity=/k')), 'ssh:a,identity=/k,command=marsd --stdio');
});

t.test('bad specs are refused with a reason', async (t) => {
  const bad: Array<[string, RegExp]> = [
    ['', /empty/],
    ['x'.repeat(MAX_TRANSPORT_SPEC_CHARS + 1), /longer than/],
    ['udp', /must start with tcp, tls or ssh:/],
    ['TCP', /must start with/],
    ['tcp,x=1', /tcp takes only the flag encrypt/],
    ['tcp,encrypt=1', /tcp takes only the flag encrypt/],
    ['tcp,encrypt,encrypt', /tcp takes only the flag encrypt/],
    ['tls,ca=/etc/ca.pem', /unknown tls option/],
    ['tls,servername=-evil', /not a DNS name/],
    ['tls,servername=', /empty value/],
    ['ssh:', /not a host name/],
    ['ssh:-oProxyCommand=sh', /not a host name/],
    ['ssh:-oProxyCommand=sh -c id', /not a host name/],
    ['ssh:root@-oProxyCommand=x', /not a host name/],
    ['ssh:-l@alpha', /ssh user/],
    ['ssh:@alpha', /ssh user/],
    ['ssh:alpha;id', /not a host name/],
    ['ssh:alpha host', /not a host name/],
    ['ssh:alpha:0', /port "0" must be 1-65535/],
    ['ssh:alpha:65536', /port "65536"/],
    ['ssh:alpha:022', /port "022"/],
    ['ssh:alpha:', /port "" must be/],
    ['ssh:alpha:22x', /ssh target|not a host name|port/],
    ['ssh:[::1', /ssh target/],
    ['ssh:[not-v6]:22', /not an IPv6 address/],
    ['ssh:a@b@c', /ssh target/],
    ['ssh:alpha,identity=relative/key', /absolute path/],
    ['ssh:alpha,identity=-oProxyCommand=x', /absolute path/],
    ['ssh:alpha,identity=/with space', /absolute path/],
    ['ssh:alpha,identity=/a/../../etc/shadow', /"\.\."/],
    ['ssh:alpha,known-hosts=/x"y', /absolute path/],
    ['ssh:alpha,identity=/a,identity=/b', /given twice/],
    ['ssh:alpha,proxy-command=x', /unknown ssh option/],
    ['ssh:alpha,oProxyCommand=x', /bad option name/],
    ['ssh:alpha,-oProxyCommand=x', /bad option name/],
    ['ssh:alpha,novalue', /not KEY=VALUE/],
    ['ssh:alpha,command=-oProxyCommand=x', /must start with a program/],
    ['ssh:alpha,command=marsd --stdio; rm -rf /', /command word/],
    ['ssh:alpha,command=marsd $(id)', /command word/],
    ['ssh:alpha,command=marsd  --stdio', /single spaces/],
    ['ssh:alpha,command=marsd\t--stdio', /printable ASCII/],
    ['ssh:alpha\n', /printable ASCII/],
    ['ssh:alpha,command=marsd \'x\'', /command word/],
    [`ssh:alpha,command=${Array.from({ length: 33 }, () => 'w').join(' ')}`, /more than 32 words/],
    [`ssh:alpha,identity=/${'k'.repeat(300)}`, /longer than 255/],
  ];
  for (const [text, why] of bad) {
    let caught: unknown;
    try {
      parseTransportSpec(text);
    } catch (err) {
      caught = err;
    }
    t.ok(caught instanceof TransportSpecError, `refused: ${JSON.stringify(text.slice(0, 60))}`);
    t.match((caught as Error | undefined)?.message, why, `says why: ${(caught as Error | undefined)?.message}`);
  }
});

t.test('describeTransport names the way for status links', async (t) => {
  t.equal(describeTransport({ kind: 'tcp' }, '10.0.0.1:7777'), 'tcp 10.0.0.1:7777');
  t.equal(describeTransport({ kind: 'tls' }, '10.0.0.1:7777'), 'tls 10.0.0.1:7777');
  t.equal(describeTransport({ kind: 'tls', servername: 'alpha' }, '10.0.0.1:7777'), 'tls 10.0.0.1:7777 (servername alpha)');
  t.equal(describeTransport(parseTransportSpec('ssh:root@[::1]:2222,identity=/k'), 'x'), 'ssh root@[::1]:2222');
  t.equal(describeTransport(parseTransportSpec('ssh:alpha'), 'x'), 'ssh alpha');
});

t.test('a parsed ssh spec can only produce the ssh options code chose', async (t) => {
  const spec = parseTransportSpec('ssh:root@[::1]:2222,identity=/k/id,command=marsd --stdio --run-dir=/run/mars');
  if (spec.kind !== 'ssh') throw new Error('not ssh');
  const args = sshArgs({ target: `${spec.user}@${spec.host}`, port: spec.port, identityFile: spec.identityFile, remoteCommand: spec.command! });
  t.same(args, ['-o', 'BatchMode=yes', '-T', '-p', '2222', '-i', '/k/id', 'root@::1', '--', 'marsd', '--stdio', "'--run-dir=/run/mars'"]);
});

t.test('linkTarget: canonical spec text, tcp equals absent, invalid values are kept with the reason', async (t) => {
  t.same(linkTarget('1.2.3.4:7777', undefined), { address: '1.2.3.4:7777', specText: undefined, transport: { kind: 'tcp' } });
  t.same(linkTarget('1.2.3.4:7777', 'tcp'), { address: '1.2.3.4:7777', specText: undefined, transport: { kind: 'tcp' } });
  t.equal(linkTarget('a:1', 'ssh:a,command=x,identity=/k').specText, 'ssh:a,identity=/k,command=x');
  const bad = linkTarget('a:1', 'ssh:-oProxyCommand=x');
  t.equal(bad.specText, 'ssh:-oProxyCommand=x');
  t.match(bad.transport, { invalid: /not a host name/ });
});
