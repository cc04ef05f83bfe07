// `kvmq image build`: the guest kernel and initramfs the qemu driver boots, built once and cached.
import type { Command } from 'commander';
import { loadConfig } from '../config.ts';

export function register(program: Command): void {
  const image = program.command('image').description('the guest image of the qemu driver');
  image
    .command('build')
    .description('build (or find cached) the guest kernel and initramfs; prints their description')
    .action(async () => {
      const { buildImage } = await import('../guests/image.ts');
      const { guests } = loadConfig();
      const started = Date.now();
      const built = await buildImage({ cacheDir: guests.imageDir, guests, log: (m) => console.error(`kvmq image: ${m}`) });
      console.error(`kvmq image: ${built.hash} ready (${((Date.now() - started) / 1000).toFixed(1)} s)`);
      console.log(JSON.stringify(built, null, 2));
    });
}
