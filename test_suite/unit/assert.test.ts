import t from 'tap';
import { assert, InvariantError } from '../../common/util/assert.js';

t.test('assert throws InvariantError on a false condition', async (t) => {
  t.throws(() => assert(false, 'boom'), InvariantError);
  t.doesNotThrow(() => assert(true, 'fine'));
});
