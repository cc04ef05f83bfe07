// kvmq's own directories hold what others on a shared host must not read: Redis's append-only file
// (webhook secrets, every result), sysctl journals, guest consoles and disks. They are created 0700.
import fs from 'node:fs/promises';

/**
 * Create `dir` (and missing parents) readable by its owner only. A directory that already exists is
 * tightened only when kvmq made it (it holds a marker); an operator's own directory (say /srv/lab) is
 * not re-permissioned behind their back, but a readable one is reported.
 */
export async function privateDir(dir: string, log?: (m: string) => void): Promise<void> {
  const created = await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  if (created !== undefined) {
    await fs.chmod(dir, 0o700); // the umask may have taken bits off, never added; this pins it
    return;
  }
  const st = await fs.stat(dir);
  if (st.mode & 0o077 && log) log(`${dir} is readable by others (mode ${(st.mode & 0o777).toString(8)}); chmod 700 it to keep its contents private`);
}
