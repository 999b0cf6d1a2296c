#!/usr/bin/env node
// Starts @vercel/cosmosdb-server over HTTPS on loopback with a certificate the
// caller generated (the package's own certificate has expired).
//
//   node scripts/emulators/cosmos.js --cert C.pem --key K.pem [--port N] [--host H]
//
// Environment fallbacks: COSMOS_CERT, COSMOS_KEY, COSMOS_PORT, COSMOS_HOST.
// Port 0 (the default) lets the OS pick a free port. Once listening it prints
// one line to stdout:  COSMOS_READY https://127.0.0.1:<port>/
// It accepts any account key. Stop it with SIGTERM or SIGINT.
"use strict";

const fs = require("fs");
const path = require("path");

function usage(message) {
  process.stderr.write(`cosmos.js: ${message}\n`);
  process.exit(2);
}

const args = {
  cert: process.env.COSMOS_CERT,
  key: process.env.COSMOS_KEY,
  port: process.env.COSMOS_PORT || "0",
  host: process.env.COSMOS_HOST || "127.0.0.1",
};
const argv = process.argv.slice(2);
while (argv.length) {
  const flag = argv.shift();
  const value = argv.shift();
  if (value === undefined) usage(`${flag} needs a value`);
  switch (flag) {
    case "--cert": args.cert = value; break;
    case "--key": args.key = value; break;
    case "--port": args.port = value; break;
    case "--host": args.host = value; break;
    default: usage(`unknown option ${flag}`);
  }
}
if (!args.cert || !args.key) usage("--cert and --key (PEM files) are required");
const port = Number.parseInt(args.port, 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) usage(`bad port ${args.port}`);

// cosmosdb-server logs each handler error with its stack; one line will do.
console.error = (err, ...rest) =>
  process.stderr.write(`${[err && err.message ? `${err.name}: ${err.message}` : err, ...rest].join(" ")}\n`);

let cosmos;
try {
  cosmos = require(path.join(__dirname, "node_modules", "@vercel", "cosmosdb-server"));
} catch (err) {
  usage(`@vercel/cosmosdb-server is not installed (${err.code || err.message}); run: npm ci --prefix scripts/emulators`);
}

const server = cosmos.createHttpsServer({
  cert: fs.readFileSync(args.cert),
  key: fs.readFileSync(args.key),
});
// One line per request on stderr (method, path, status): the test prints
// this log when it fails.
//
// Compatibility fix: cosmosdb-server lists partition key ranges with a numeric
// `id` (0); Cosmos DB and the Rust SDK use strings ("0"), and the SDK cannot
// resolve a container's topology otherwise. Rewrite that one response.
//
// Compatibility fix: the Rust SDK runs a whole-container query as one query
// per partition key range (header x-ms-documentdb-partitionkeyrangeid), not
// with x-ms-documentdb-query-enablecrosspartition, and cosmosdb-server then
// insists on a partition key in the WHERE clause. Its single range covers the
// whole container, so such a query is marked cross-partition here.
server.prependListener("request", (req, res) => {
  const h = req.headers;
  if (
    req.method === "POST" &&
    /\/docs\/?$/.test(req.url) &&
    String(h["x-ms-documentdb-isquery"]).toLowerCase() === "true" &&
    h["x-ms-documentdb-partitionkeyrangeid"] !== undefined &&
    h["x-ms-documentdb-partitionkey"] === undefined
  ) {
    h["x-ms-documentdb-query-enablecrosspartition"] = "true";
  }
  if (req.method === "GET" && /\/pkranges\/?(\?.*)?$/.test(req.url)) {
    const end = res.end.bind(res);
    res.end = (chunk, ...rest) => {
      try {
        const body = JSON.parse(chunk);
        for (const range of body.PartitionKeyRanges || []) {
          if (typeof range.id === "number") range.id = String(range.id);
        }
        chunk = JSON.stringify(body);
      } catch (_) {
        // not JSON: pass it on unchanged
      }
      return end(chunk, ...rest);
    };
  }
  res.on("finish", () => process.stderr.write(`${req.method} ${req.url} -> ${res.statusCode}\n`));
});
server.on("error", (err) => {
  process.stderr.write(`cosmos.js: ${err.message}\n`);
  process.exit(1);
});
server.listen(port, args.host, () => {
  const address = server.address();
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  process.stdout.write(`COSMOS_READY https://${host}:${address.port}/\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
// Exit when the parent closes our stdin (e.g. the test process died).
if (process.env.COSMOS_EXIT_ON_STDIN_EOF === "1") {
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
}
