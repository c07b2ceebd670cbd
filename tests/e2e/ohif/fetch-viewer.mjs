// Fetch the built OHIF viewer into <repo>/.cache/ohif/<version>/dist, once.
//
// `npm install @ohif/app` cannot work (its dependency tree names packages the registry does not
// have), but the package's tarball holds the built viewer in package/dist. So: `npm pack` the
// pinned version (npm verifies it and keeps it in its cache, so a later fetch works offline),
// check it against the integrity pinned in package.json, unpack it beside the target and rename
// it into place, so that an interrupted fetch never leaves a half viewer behind.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const { ohifVersion: version, ohifIntegrity: integrity } = JSON.parse(
  readFileSync(join(here, 'package.json'), 'utf8'),
).config;
const target = resolve(here, '..', '..', '..', '.cache', 'ohif', version);

if (existsSync(join(target, 'dist', 'index.html'))) process.exit(0);

mkdirSync(dirname(target), { recursive: true });
const work = mkdtempSync(`${target}.partial-`);
try {
  console.error(`fetching @ohif/app@${version} (about 50 MB) into ${target}`);
  const packed = JSON.parse(
    execFileSync(
      'npm',
      ['pack', `@ohif/app@${version}`, '--json', '--prefer-offline', '--pack-destination', work],
      { cwd: work, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
    ),
  );
  const tarball = join(work, packed[0].filename);
  const [algorithm, expected] = integrity.split('-', 2);
  const actual = createHash(algorithm).update(readFileSync(tarball)).digest('base64');
  if (actual !== expected) {
    throw new Error(`@ohif/app@${version}: integrity ${algorithm}-${actual}, expected ${integrity}`);
  }
  execFileSync('tar', ['-xzf', tarball, '-C', work, 'package/dist'], { stdio: 'inherit' });
  rmSync(target, { recursive: true, force: true });
  mkdirSync(target);
  renameSync(join(work, 'package', 'dist'), join(target, 'dist'));
} finally {
  rmSync(work, { recursive: true, force: true });
}
