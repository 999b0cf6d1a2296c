// Drives the Restate peer of scripts/bench-peers.sh through the ingress HTTP
// API: waits until the Ping service answers, prints "ready", waits for "go" on
// stdin, then (timed) sends N ClusterJob workflows (one-way `send`), attaches to
// each until it has finished, and prints one JSON line: {"jobs", "succeeded", "seconds"}.
// Usage: node restate_client.mjs INGRESS_URL N
import http from "node:http";
import { createInterface } from "node:readline";

const [ingress, jobsArg] = process.argv.slice(2);
const jobs = Number(jobsArg);
const sendAgent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const attachAgent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function request(agent, method, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL(path, ingress), {
      agent,
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
    }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
    });
    req.on("error", reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

async function waitReady() {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const res = await request(sendAgent, "POST", "/Ping/ping", null).catch((e) => ({ status: 0, body: String(e) }));
    if (res.status === 200) return;
    if (Date.now() > deadline) throw new Error(`Ping never answered: ${res.status} ${res.body}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function expectOk(res, what) {
  if (res.status < 200 || res.status >= 300) throw new Error(`${what}: HTTP ${res.status} ${res.body}`);
  return res;
}

await waitReady();
console.log("ready");
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const go = await lines.next();
if (go.done || go.value.trim() !== "go") throw new Error("expected 'go' on stdin");
const started = performance.now();
await Promise.all(Array.from({ length: jobs }, (_, i) =>
  request(sendAgent, "POST", `/ClusterJob/job-${i}/run/send`, i).then((r) => expectOk(r, `send job-${i}`))));
const outputs = await Promise.all(Array.from({ length: jobs }, (_, i) =>
  request(attachAgent, "GET", `/restate/workflow/ClusterJob/job-${i}/attach`).then((r) => expectOk(r, `attach job-${i}`))));
const seconds = (performance.now() - started) / 1000;
const succeeded = outputs.filter((r) => JSON.parse(r.body) === "Succeeded").length;
console.log(JSON.stringify({ jobs, succeeded, seconds }));
sendAgent.destroy();
attachAgent.destroy();
process.exit(0);
