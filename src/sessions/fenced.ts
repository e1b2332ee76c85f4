/** A run was refused a write: it no longer holds its session (ended elsewhere, deleted, lost). */
export class Fenced extends Error {
  override name = 'Fenced'
}
