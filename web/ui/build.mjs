// Builds the dashboard into ../dist (committed, embedded in hubd by package web).
// node build.mjs [--watch]
import * as esbuild from 'esbuild';
import { readFileSync, writeFileSync, rmSync, mkdirSync } from 'node:fs';
import { basename } from 'node:path';

const outdir = new URL('../dist/', import.meta.url).pathname;
rmSync(outdir, { recursive: true, force: true });
mkdirSync(outdir + 'assets', { recursive: true });

const options = {
  entryPoints: ['src/main.js'],
  bundle: true,
  minify: true,
  sourcemap: false,
  format: 'esm',
  target: ['chrome110', 'firefox110', 'safari16'],
  outdir: outdir + 'assets',
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  loader: { '.png': 'file', '.svg': 'file' },
  metafile: true,
  legalComments: 'linked',
  logLevel: 'info',
};

function writeIndex(meta) {
  const outs = Object.keys(meta.outputs).map((p) => basename(p));
  const js = outs.find((f) => f.startsWith('main-') && f.endsWith('.js'));
  const css = outs.find((f) => f.startsWith('main-') && f.endsWith('.css'));
  const html = readFileSync('src/index.html', 'utf8')
    .replace('%CSS%', `/assets/${css}`)
    .replace('%JS%', `/assets/${js}`);
  writeFileSync(outdir + 'index.html', html);
}

if (process.argv.includes('--watch')) {
  const ctx = await esbuild.context({
    ...options,
    plugins: [{ name: 'index', setup(b) { b.onEnd((r) => r.metafile && writeIndex(r.metafile)); } }],
  });
  await ctx.watch();
} else {
  const result = await esbuild.build(options);
  writeIndex(result.metafile);
}
