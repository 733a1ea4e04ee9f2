// Prints the size of the ESM build (dist/index.js), minified (esbuild, which
// tsup brings) and gzipped: what a browser application pays for the client.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { transform } from "esbuild";

const src = readFileSync(new URL("../dist/index.js", import.meta.url), "utf8");
const { code } = await transform(src, { minify: true, format: "esm", target: "es2022" });
const gz = gzipSync(code, { level: 9 });
const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
console.log(`dist/index.js: ${kib(src.length)} built, ${kib(code.length)} minified, ${kib(gz.length)} minified+gzipped`);
