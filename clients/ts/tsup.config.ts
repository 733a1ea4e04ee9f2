import { defineConfig } from "tsup";

export default defineConfig({
  // `agui` is the `@agentwire/client/agui` subpath; the main entry never
  // imports it (nor @ag-ui/*). Code both use is split into shared chunks, so
  // the two entries share one copy of the client (one `AgentWireError`).
  entry: { index: "src/index.ts", agui: "src/agui.ts" },
  format: ["esm", "cjs"],
  dts: true,
  clean: true,
  sourcemap: true,
  splitting: true,
  target: "es2022",
  platform: "neutral",
  treeshake: true,
  // The AG-UI packages are optional peers of the `agui` entry: never bundled.
  external: ["@ag-ui/core", "@ag-ui/core/schemas", "@ag-ui/client", "rxjs", "zod"],
  // fflate (a pinned devDependency; gunzipSync and what it needs) is bundled:
  // the package keeps no runtime dependency and dist/index.js loads in a
  // browser as it is (examples/browser).
  noExternal: ["fflate"],
});
