import { run } from '../../bin/commands/jacobian.js';
import { runCommand } from '../helpers/cli.js';
import { expect } from '../helpers/setup.js';

/** Runs the command with console output captured. */
const capture = (argv: string[]) => runCommand(run, argv);

describe('bin/commands/jacobian (jacobian-chain jacobian)', () => {
  it('the cats-vs-dogs conv stage: prints shape, nnz, bytes, colours, time, and the chained gradient equal to the VJP gradient', async () => {
    const { code, out } = await capture(['--side', '24', '--batch', '2', '--json']);
    expect(code).to.equal(0);
    expect(out).to.match(/Jacobian w\.r\.t\. input: shape \[2, 1, 1, 64, 24, 24, 3\], format sparse/);
    expect(out).to.match(/chosen: forward\/propagate/);
    expect(out).to.match(/forward\/compressed +1452 colours/);
    expect(out).to.match(/nnz \d+ \(density/);
    expect(out).to.match(/bytes .* \(dense: 1\.69 MiB\)/);
    expect(out).to.match(/time \d/);
    expect(out).to.match(/gradient chained through it vs the VJP gradient: max \|difference\| .*: equal/);
    const json = JSON.parse(out.split('\n').find((l) => l.startsWith('{'))!);
    expect(json.results[0].pass).to.equal(true);
    expect(json.results[0].relDiff).to.be.below(1e-10);
    expect(json.results[0].nnz).to.be.above(0);
  });

  it('a model file, another stage, every engine and the weights: equal gradients', async () => {
    for (const args of [['--mode', 'reverse'], ['--mode', 'forward', '--engine', 'compressed'], ['--format', 'dense']]) {
      const { code, out } = await capture(['--model', 'spec/fixtures/seed_reference.json', '--stage', '1', '--wrt', 'all', ...args]);
      expect(code, args.join(' ')).to.equal(0);
      expect(out).to.match(/Jacobian w\.r\.t\. conv2d_1\.kernel: shape \[3, 8, 8, 6, 2, 2, 6, 6\]/);
      expect(out).to.match(/all gradients equal/);
    }
  });

  it('bad options: exit code 2 and a message quoting what was received', async () => {
    let r = await capture(['--mode', 'sideways']);
    expect(r.code).to.equal(2);
    expect(r.err).to.match(/expected --mode to be one of auto, forward, reverse, received "sideways"/);
    r = await capture(['--stage', '7']);
    expect(r.code).to.equal(2);
    expect(r.err).to.match(/--stage: expected a stage index in 0\.\.1, received 7/);
    r = await capture(['--side', '10']);
    expect(r.code).to.equal(2);
    expect(r.err).to.match(/side to be an integer >= 22/);
    r = await capture(['--frobnicate']);
    expect(r.code).to.equal(2);
    expect(r.err).to.match(/unknown option "--frobnicate"/);
    expect((await capture(['--help'])).out).to.match(/usage: jacobian-chain jacobian/);
  });
});
