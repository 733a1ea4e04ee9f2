// Prints the size of the ESM build of the main entry (dist/index.js and the
// shared chunks it imports, bundled), minified (esbuild, which tsup brings)
// and gzipped: what a browser application pays for the client. The `agui`
// subpath is not part of it, and the main entry must not reach @ag-ui/* or
// rxjs: that fails here.
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const entry = new URL("../dist/index.js", import.meta.url).pathname;
const result = await build({
  entryPoints: [entry],
  bundle: true,
  write: false,
  minify: true,
  format: "esm",
  target: "es2022",
  platform: "neutral",
  metafile: true,
});
const inputs = Object.keys(result.metafile.inputs);
const foreign = inputs.filter((p) => /@ag-ui|rxjs|zod/.test(p));
if (foreign.length) {
  console.error(`dist/index.js reaches ${foreign.join(", ")}: the main entry must not load the AG-UI packages`);
  process.exit(1);
}
const built = inputs.reduce((n, p) => n + result.metafile.inputs[p].bytes, 0);
const code = result.outputFiles[0].contents;
const gz = gzipSync(code, { level: 9 });
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
console.log(
  `dist/index.js (+ ${inputs.length - 1} chunk${inputs.length === 2 ? "" : "s"}): ${kib(built)} built, ${kib(code.length)} minified, ${kib(gz.length)} minified+gzipped`,
);
