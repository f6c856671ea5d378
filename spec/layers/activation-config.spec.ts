import { ConfigError } from '../../lib/errors.js';
import { ACTIVATIONS } from '../../lib/activations.js';
import { Activation } from '../../lib/layers/activation.js';
import { expect } from '../helpers/setup.js';

describe('layers: Activation config', () => {
  it('without an activation it is a ConfigError, not a silent linear layer', () => {
    expect(() => new Activation({} as never)).to.throw(ConfigError, `Activation: expected config.activation, one of ${ACTIVATIONS.join(', ')}, received {}`);
    expect(() => new Activation({ activation: undefined } as never)).to.throw(ConfigError, 'received {"activation": undefined}');
    expect(() => new Activation(undefined as never)).to.throw(ConfigError, 'received undefined');
    expect(() => new Activation({ activation: 'mish' } as never)).to.throw(ConfigError, 'unknown activation "mish"');
    expect(new Activation({ activation: 'linear' }).activation).to.equal('linear');
  });
});
