// The page script of spec/browser/bundle.spec.ts: the seed's reference check (both ways against one
// tape) run by the library in the page, one <li> per line, then a "done" marker the spec waits for.
import { seedCheckLines } from '../../explorer/check.js';

const list = document.getElementById('lines')!;
try {
  for (const line of await seedCheckLines()) {
    const li = document.createElement('li');
    li.textContent = line;
    list.append(li);
  }
  document.body.dataset.state = 'done';
} catch (e) {
  document.body.dataset.state = `error: ${(e as Error).message}`;
  throw e;
}
