import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import { compareStates, topN, Ranking, DropDetector, RateMeter, histLabels, stepPath, thin } from '../board.js';

const st = (subject, bayes, count = 10) => ({ subject, bayes, count, mean: 0, sum: 0, version: 1, lsn: '0/1', updated_at: '' });

describe('ranking', () => {
  test('orders by bayes, then count, then subject', () => {
    const list = [st('b', 4), st('a', 4), st('c', 4, 20), st('d', 4.5)];
    assert.deepEqual(list.sort(compareStates).map((s) => s.subject), ['d', 'c', 'a', 'b']);
  });

  test('topN equals a full sort cut to n', () => {
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const states = Array.from({ length: 2000 }, (_, i) => st(`seller:${i}`, Math.round(rnd() * 500) / 100, Math.floor(rnd() * 50)));
    for (const n of [0, 1, 50, 1999, 2000, 3000]) {
      const want = [...states].sort(compareStates).slice(0, n).map((s) => s.subject);
      assert.deepEqual(topN(states, n).map((s) => s.subject), want, `n=${n}`);
    }
  });

  test('Ranking recomputes only when a change can alter the top', () => {
    const states = new Map();
    for (let i = 0; i < 10; i++) states.set(`s${i}`, st(`s${i}`, i));
    const r = new Ranking(3);
    assert.equal(r.update(states), true);
    assert.deepEqual(r.order, ['s9', 's8', 's7']);
    assert.equal(r.update(states), false); // nothing touched

    states.set('s1', st('s1', 1.5)); // below the top: no work
    r.touch(states.get('s1'));
    assert.equal(r.update(states), false);

    states.set('s2', st('s2', 8.5)); // enters the top
    r.touch(states.get('s2'));
    assert.equal(r.update(states), true);
    assert.deepEqual(r.order, ['s9', 's2', 's8']);

    states.set('s9', st('s9', 0)); // leaves the top
    r.touch(states.get('s9'));
    assert.equal(r.update(states), true);
    assert.deepEqual(r.order, ['s2', 's8', 's7']);
  });
});

describe('DropDetector', () => {
  test('alerts when the score falls more than the threshold below its high within the window', () => {
    const d = new DropDetector({ threshold: 0.15, windowMs: 60000 });
    assert.equal(d.observe('seller:1', 4.0, 3.95, 0), null);
    assert.equal(d.observe('seller:1', 3.95, 3.9, 1000), null); // 0.10 below
    const hit = d.observe('seller:1', 3.9, 3.84, 2000); // 0.16 below 4.0
    assert.ok(hit);
    assert.equal(hit.isNew, true);
    assert.deepEqual({ ...hit.alert }, { subject: 'seller:1', from: 4.0, to: 3.84, at: 2000, since: 2000 });
    const deeper = d.observe('seller:1', 3.84, 3.7, 3000); // deepens, no second alert
    assert.equal(deeper.isNew, false);
    assert.equal(deeper.alert.to, 3.7);
    assert.equal(d.observe('seller:1', 3.7, 3.75, 4000), null); // recovering a bit
  });

  test('exactly the threshold alerts; a slow slide outside the window does not', () => {
    const d = new DropDetector({ threshold: 0.15, windowMs: 60000 });
    assert.ok(d.observe('a', 4.0, 3.85, 0)); // seeded with the value before the delta
    const slow = new DropDetector({ threshold: 0.15, windowMs: 60000 });
    let v = 4.0;
    for (let t = 0; t <= 600000; t += 30000) {
      assert.equal(slow.observe('b', v, v - 0.04, t), null, `t=${t}`); // 0.12 per minute at most
      v -= 0.04;
    }
  });

  test('a new alert after the window passes; threshold is live; prune forgets', () => {
    const d = new DropDetector({ threshold: 0.15, windowMs: 60000 });
    assert.ok(d.observe('a', 4, 3.8, 0).isNew);
    // two minutes later the score held at 3.8 all along; a new fall is a new alert from 3.8
    const again = d.observe('a', 3.8, 3.6, 120000);
    assert.equal(again.isNew, true);
    assert.equal(again.alert.from, 3.8);
    assert.equal(again.alert.to, 3.6);
    const d2 = new DropDetector({ threshold: 0.5 });
    assert.equal(d2.observe('x', 4, 3.8, 0), null);
    d2.threshold = 0.1;
    assert.ok(d2.observe('x', 3.8, 3.79, 1000));
    d2.prune(1000 + 61000);
    assert.equal(d2.tracked, 0);
  });

  test('unknown previous value (NaN) only starts the history', () => {
    const d = new DropDetector({ threshold: 0.15 });
    assert.equal(d.observe('a', NaN, 3.0, 0), null);
    assert.ok(d.observe('a', NaN, 2.8, 10));
  });
});

describe('RateMeter', () => {
  test('counts events in the last second', () => {
    const m = new RateMeter(1000, 10);
    for (let t = 0; t < 1000; t += 10) m.add(1, t); // 100 events in 1 s
    assert.equal(m.rate(999), 100);
    assert.equal(m.rate(1499), 50); // the first half has left the window
    assert.equal(m.rate(5000), 0);
    m.add(7, 5000);
    assert.equal(m.rate(5000), 7);
  });
});

describe('helpers', () => {
  test('histLabels', () => {
    assert.deepEqual(histLabels(5), ['1', '2', '3', '4', '5']);
    assert.deepEqual(histLabels(11), ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '10']);
    assert.deepEqual(histLabels(10).at(-1), '10');
    assert.deepEqual(histLabels(0), []);
  });

  test('stepPath spans the box', () => {
    const { d, min, max } = stepPath([{ t: 0, v: 3 }, { t: 50, v: 4 }, { t: 100, v: 3.5 }], 100, 50, { pad: 0 });
    assert.equal(min, 3);
    assert.equal(max, 4);
    assert.equal(d, 'M0 50H50V0H100V25H100');
    assert.equal(stepPath([], 100, 50).d, '');
    assert.match(stepPath([{ t: 5, v: 2 }], 100, 50).d, /^M/);
  });

  test('thin keeps the ends', () => {
    const pts = Array.from({ length: 1000 }, (_, i) => i);
    const out = thin(pts, 10);
    assert.equal(out.length, 10);
    assert.equal(out[0], 0);
    assert.equal(out.at(-1), 999);
    assert.equal(thin(pts, 2000), pts);
  });
});
