import { createSigner } from 'fast-jwt'
import { TEST_SECRET } from '../helpers/app.ts'

/**
 * A token whose `exp` is exactly `exp` (seconds). signToken's `expiresInMs` always wins over
 * an `exp` claim (fast-jwt computes exp from expiresIn), so past or precise expiries need this.
 */
export function tokenExpiringAt(sub: string, exp: number): string {
  return createSigner({ key: TEST_SECRET })({ sub, exp })
}
