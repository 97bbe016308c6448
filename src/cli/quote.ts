// Shell quoting for commands the CLI prints, so they can be pasted back into a POSIX shell.

const SAFE = /^[A-Za-z0-9_@%+=:,.\/-]+$/;

/** One word: as is when it needs no quoting, else in single quotes ('it'\''s'). */
export function shellWord(s: string): string {
  if (s !== '' && SAFE.test(s)) return s;
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export function shellJoin(words: readonly string[]): string {
  return words.map(shellWord).join(' ');
}
