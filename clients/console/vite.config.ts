import { defineConfig } from "vite";

// `base: "./"`: the built files refer to each other relatively, so dist/
// works under any path (/console/ on the dev gateway, a bucket's prefix…).
export default defineConfig({
  base: "./",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: true,
    target: "es2022",
    chunkSizeWarningLimit: 1024,
  },
});
