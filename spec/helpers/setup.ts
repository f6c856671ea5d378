/** Registers the package's own chai `allclose` assertion for every spec. */
import * as chai from 'chai';
import { chaiAllclose } from '../../lib/chai.js';

chai.use(chaiAllclose);
export const { expect } = chai;
