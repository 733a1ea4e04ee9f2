// Runs the `sendmessage` Lambda handler of aws-samples/simple-websockets-chat-app
// (a checkout given with --sample; its code is never copied into this repo) so
// agentwire-bench can invoke it over and over against the dev gateway.
//
//   node run.mjs --sample /tmp/chat-sample --table <TABLE_NAME> \
//                --domain 127.0.0.1:<PORT> --stage local
//
// The caller sets AWS_REGION, credentials and AWS_ENDPOINT_URL (DynamoDB, read
// by AWS SDK v3 itself). The harness sets TABLE_NAME.
//
// The one change to the sample: in sendmessage/app.js the endpoint of its
// ApiGatewayManagementApiClient,
//   `https://${event.requestContext.apiId}.execute-api.${process.env.AWS_REGION}.amazonaws.com/${event.requestContext.stage}`
// (or, in the sample's earlier v3 revision,
//   `https://${event.requestContext.domainName}/${event.requestContext.stage}`)
// becomes
//   `http://${event.requestContext.domainName}/${event.requestContext.stage}`
// i.e. plain http to the --domain given here, still with the stage as the path
// prefix, so posts go to POST http://<domain>/<stage>/@connections/{id}.
// Nothing else in the source is touched. The rewritten text is written to a temp
// directory under os.tmpdir() whose node_modules is a symlink to this
// directory's node_modules (the sample declares no dependencies: on Lambda the
// nodejs20.x runtime supplies AWS SDK v3), imported from there, then removed.
//
// Protocol: prints {"ready": true} once; then for each stdin line
// {"data": "<string>"} calls the handler and prints
// {"status": <statusCode>, "ms": <handler wall time>} (plus "error" with the
// handler's body when it is not 200). A failure outside the handler's own
// answer prints {"status": 0, "error": "..."}. Diagnostics go to stderr. Exits
// at stdin EOF.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const here = path.dirname(fileURLToPath(import.meta.url));

const { values: args } = parseArgs({
  options: {
    sample: { type: "string" },
    table: { type: "string" },
    domain: { type: "string" },
    stage: { type: "string", default: "local" },
  },
});
for (const k of ["sample", "table", "domain"]) {
  if (!args[k]) {
    console.error(`usage: node run.mjs --sample <checkout> --table <TABLE_NAME> --domain <host:port> [--stage local] (missing --${k})`);
    process.exit(2);
  }
}

// AWS SDK v3 warns on stderr, once per client package, that releases after
// January 2027 need Node 22; not useful in bench output.
const defaultWarning = process.listeners("warning");
process.removeAllListeners("warning");
process.on("warning", (w) => {
  if (!String(w?.message).startsWith("NodeVersionSupportWarning")) for (const l of defaultWarning) l(w);
});

// The sample logs with console.log (stale connections); stdout is ours.
console.log = console.error;
console.info = console.error;

process.env.TABLE_NAME = args.table;
process.env.AWS_REGION ??= "us-east-1";

const HTTP_ENDPOINT = "`http://${event.requestContext.domainName}/${event.requestContext.stage}`";
const ENDPOINTS = [
  "`https://${event.requestContext.apiId}.execute-api.${process.env.AWS_REGION}.amazonaws.com/${event.requestContext.stage}`",
  "`https://${event.requestContext.domainName}/${event.requestContext.stage}`",
];

function rewrite(source) {
  const found = ENDPOINTS.filter((e) => source.split(e).length === 2);
  if (found.length !== 1 || ENDPOINTS.some((e) => source.split(e).length > 2)) {
    throw new Error(
      "sendmessage/app.js: expected exactly one known ApiGatewayManagementApiClient endpoint expression; the sample changed, update run.mjs",
    );
  }
  return source.replace(found[0], () => HTTP_ENDPOINT);
}

const appPath = path.join(path.resolve(args.sample), "sendmessage", "app.js");
const nodeModules = path.join(here, "node_modules");
if (!fs.existsSync(nodeModules)) {
  console.error(`${nodeModules} missing: run \`npm ci\` in ${here}`);
  process.exit(2);
}
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "agentwire-chat-sample-"));
process.on("exit", () => fs.rmSync(tmp, { recursive: true, force: true }));
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(130));

let handler;
try {
  const source = fs.readFileSync(appPath, "utf8");
  fs.symlinkSync(nodeModules, path.join(tmp, "node_modules"), "dir");
  const out = path.join(tmp, "app.mjs"); // the sample is ESM ("type": "module")
  fs.writeFileSync(out, rewrite(source));
  ({ handler } = await import(pathToFileURL(out).href));
  // Loaded; the SDK resolves anything it loads later from its real path, so
  // the temp copy can go now (the bench ends this process with SIGKILL).
  fs.rmSync(tmp, { recursive: true, force: true });
  if (typeof handler !== "function") throw new Error(`${appPath} exports no handler`);
} catch (e) {
  console.error(e?.stack ?? String(e));
  process.stdout.write(JSON.stringify({ status: 0, error: String(e?.message ?? e) }) + "\n");
  process.exit(1);
}

const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");
say({ ready: true });

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of rl) {
  if (!line.trim()) continue;
  try {
    const { data } = JSON.parse(line);
    if (typeof data !== "string") throw new Error('expected {"data": "<string>"}');
    // The fields an API Gateway WebSocket MESSAGE event carries that the
    // handler reads (apiId, stage, domainName, connectionId) and a few more.
    const event = {
      requestContext: {
        routeKey: "sendmessage",
        eventType: "MESSAGE",
        connectionId: "bench-sender",
        domainName: args.domain,
        stage: args.stage,
        apiId: "local",
      },
      body: JSON.stringify({ action: "sendmessage", data }),
      isBase64Encoded: false,
    };
    const t0 = performance.now();
    const res = await handler(event);
    const ms = performance.now() - t0;
    const status = res?.statusCode ?? 0;
    if (status === 200) {
      say({ status, ms });
    } else {
      console.error(`handler answered ${status}: ${res?.body}`);
      say({ status, ms, error: String(res?.body ?? "") });
    }
  } catch (e) {
    console.error(e?.stack ?? String(e));
    say({ status: 0, error: String(e?.message ?? e) });
  }
}
process.exit(0);
