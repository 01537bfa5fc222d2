// The scale suite's control-round p99 (test_suite/bench/round-quantile.ts), read from a real
// prom-client histogram's exposition as marsd serves it.
import t from 'tap';
import { Histogram, Registry } from 'prom-client';
import { CONTROL_ROUND_METRIC, histogramOf, histogramSince, quantileBound } from '../../test_suite/bench/round-quantile.js';

function rounds() {
  const registry = new Registry();
  const h = new Histogram({ name: CONTROL_ROUND_METRIC, help: 'rounds', registers: [registry], buckets: [0.001, 0.01, 0.1, 1] });
  return { registry, h };
}

t.test('p99 is the upper bound of the bucket it falls in', async (t) => {
  const { registry, h } = rounds();
  for (let i = 0; i < 98; i++) h.observe(0.0005);
  h.observe(0.05);
  h.observe(0.5);
  const all = histogramOf(await registry.metrics(), CONTROL_ROUND_METRIC);
  t.equal(all.count, 100);
  t.equal(quantileBound(all, 0.5), 0.001);
  t.equal(quantileBound(all, 0.99), 0.1, 'the 99th of 100 samples is the 50 ms one');
  t.equal(quantileBound(all, 1), 1);
  h.observe(5);
  t.equal(quantileBound(histogramOf(await registry.metrics(), CONTROL_ROUND_METRIC), 1), Infinity, 'above the largest bucket');
});

t.test('a window is the difference of two scrapes', async (t) => {
  const { registry, h } = rounds();
  for (let i = 0; i < 50; i++) h.observe(0.5);
  const before = histogramOf(await registry.metrics(), CONTROL_ROUND_METRIC);
  for (let i = 0; i < 100; i++) h.observe(0.0002);
  const after = histogramOf(await registry.metrics(), CONTROL_ROUND_METRIC);
  const window = histogramSince(before, after);
  t.equal(window.count, 100);
  t.equal(quantileBound(window, 0.99), 0.001, 'the slow start-up rounds are not in the window');
  t.equal(quantileBound(after, 0.99), 1, 'but they are since the start');
  t.equal(quantileBound(histogramSince(after, after), 0.99), undefined, 'no samples, no quantile');
  t.throws(() => histogramSince(after, before), /backwards/, 'a restart between the scrapes is refused');
});

t.test('bad input is refused with a clear error', async (t) => {
  const { registry } = rounds();
  const text = await registry.metrics();
  t.throws(() => histogramOf(text, 'mars_no_such_metric'), /no unlabelled histogram mars_no_such_metric/);
  t.throws(() => quantileBound({ count: 1, buckets: new Map([[Infinity, 1]]) }, 0), /quantile 0/);
});
