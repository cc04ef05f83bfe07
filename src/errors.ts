// Errors shared by every layer. They live at the bottom of the tree so that host, guests, run and
// workers can all throw them without importing each other.

/** Thrown for a failure that retrying cannot fix (the worker turns it into UnrecoverableError). */
export class PermanentError extends Error {}
