import { UsageError, choice, commaList, integer, nonNegativeNumber, parseCommand, parseOptions, positiveInt, positiveNumber, refuse } from '../bin/args.js';
import { ConfigError, ShapeError } from '../lib/errors.js';
import { captureConsole } from './helpers/cli.js';
import { expect } from './helpers/setup.js';

const OPTIONS = { lr: 'string', split: 'string', json: 'boolean' } as const;

describe('bin/args: the options of every command', () => {
  it('parseOptions: values by name, inline or not; a value may start with one dash; switches are true', () => {
    expect(parseOptions(['--lr', '-1', '--split=1,2', '--json'], OPTIONS)).to.deep.equal({ lr: '-1', split: '1,2', json: true });
    expect(parseOptions(['--lr=-1'], OPTIONS)).to.deep.equal({ lr: '-1' });
    expect(parseOptions([], OPTIONS)).to.deep.equal({});
    expect(parseOptions(['--lr', 'x', '-h'], OPTIONS)).to.equal('help');
    expect(parseOptions(['--help', '--bogus'], OPTIONS)).to.equal('help');
  });

  it('parseOptions refuses, quoting what it received: unknown options and positionals, a missing value, a switch with a value', () => {
    expect(() => parseOptions(['--bogus'], OPTIONS)).to.throw(UsageError, 'unknown option "--bogus"; expected one of --lr, --split, --json, --help');
    expect(() => parseOptions(['stray'], OPTIONS)).to.throw(UsageError, 'unknown option "stray"; expected one of --lr');
    expect(() => parseOptions(['-x'], OPTIONS)).to.throw(UsageError, 'unknown option "-x"');
    expect(() => parseOptions(['--toString'], OPTIONS)).to.throw(UsageError, 'unknown option "--toString"');
    expect(() => parseOptions(['--lr'], OPTIONS)).to.throw(UsageError, 'expected a value after --lr, received nothing');
    expect(() => parseOptions(['--lr', '--json'], OPTIONS)).to.throw(UsageError, 'expected a value after --lr, received "--json"');
    expect(() => parseOptions(['--json=yes'], OPTIONS)).to.throw(UsageError, 'expected --json to take no value, received "yes"');
  });

  it('validators: typed values, undefined passed through, messages quoting the flag and the text', () => {
    expect(positiveInt('3', '--batch')).to.equal(3);
    expect(positiveInt(' 3 ', '--batch')).to.equal(3);
    expect(positiveInt(undefined, '--batch')).to.equal(undefined);
    for (const bad of ['0', '-2', '2.5', '1e3', '0x10', '', 'two', '9007199254740993']) expect(() => positiveInt(bad, '--batch'), bad).to.throw(UsageError, `expected --batch to be an integer >= 1, received ${JSON.stringify(bad)}`);
    expect(integer(0)('0', '--seed')).to.equal(0);
    expect(positiveNumber('1e-3', '--lr')).to.equal(1e-3);
    for (const bad of ['0', '-1', 'fast', '', 'Infinity', 'NaN']) expect(() => positiveNumber(bad, '--lr'), bad).to.throw(UsageError, `expected --lr to be a positive number, received ${JSON.stringify(bad)}`);
    expect(nonNegativeNumber('0', '--atol')).to.equal(0);
    expect(choice(['vjp', 'jacobian'])('vjp', '--method')).to.equal('vjp');
    expect(() => choice(['vjp', 'jacobian'])('VJP', '--method')).to.throw(UsageError, 'expected --method vjp or jacobian, received "VJP"');
    expect(() => choice(['a', 'b', 'c'])('d', '--mode')).to.throw(UsageError, 'expected --mode to be one of a, b, c, received "d"');
    const list = commaList(positiveInt, 'to be comma-separated integers >= 1');
    expect(list('1, 2,3', '--split')).to.deep.equal([1, 2, 3]);
    expect(() => list('1,,3', '--split')).to.throw(UsageError, 'expected --split to be comma-separated integers >= 1, received "1,,3"');
  });

  it('parseCommand: --help prints the help (0); a bad option is printed with a pointer to --help (2); a bug is rethrown', async () => {
    let r = await captureConsole(() => parseCommand('demo', 'usage: demo', () => 'help' as const));
    expect(r.value).to.equal(0);
    expect(r.err).to.equal('');
    // Every command's help ends with the exit-code table.
    expect(r.out).to.match(/^usage: demo\n\nexit codes:\n {3}0 {2}success\n {3}1 {2}a check failed.*\n {3}2 {2}usage error.*\n {3}3 {2}bad input file.*\n {3}4 {2}refused by the memory guard.*\n {3}5 {2}train stopped on a non-finite.*\n {3}6 {2}train --connect: the stage server refused.*\n {2}70 {2}internal error.*\n$/);
    r = await captureConsole(() => parseCommand('demo', 'usage: demo', () => ({ lr: positiveNumber('-1', '--lr') })));
    expect(r).to.deep.equal({ value: 2, out: '', err: 'jacobian-chain demo: expected --lr to be a positive number, received "-1"; run "jacobian-chain demo --help" for the options' });
    expect(parseCommand('demo', '', () => ({ ok: true }))).to.deep.equal({ ok: true });
    // A ShapeError reaching a command came from its input (exit 3, bin/exit-codes.ts), and needs no pointer to --help.
    expect(await captureConsole(() => refuse('demo', new ShapeError('too big'), true))).to.deep.equal({ value: 3, out: '', err: 'jacobian-chain demo: too big' });
    expect(() => parseCommand('demo', '', () => { throw new TypeError('a bug'); })).to.throw(TypeError, 'a bug');
    expect(new UsageError('x')).to.be.instanceOf(ConfigError);
  });
});
