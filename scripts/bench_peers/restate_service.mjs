// The Restate peer of scripts/bench-peers.sh: the same cluster-shaped job as a
// Restate workflow (shape.json: 6 steps, 17 checkpoints, one ctx.run per
// checkpoint), served over HTTP/2 (cleartext) on 127.0.0.1:<port> for restate-server to call.
// Usage: node restate_service.mjs PORT
import { readFileSync } from "node:fs";
import http2 from "node:http2";

// The SDK calls Promise.withResolvers (ES2024), which Node 20 lacks: the standard shape.
Promise.withResolvers ??= function withResolvers() {
  let resolve, reject;
  const promise = new this((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
};
const restate = await import("@restatedev/restate-sdk");

const shape = JSON.parse(readFileSync(new URL("./shape.json", import.meta.url), "utf8")).steps;

/** What a provisioning call returns, with no call made: a resource id. */
function azureStandIn(job, step, k) {
  return `/subscriptions/0/resourceGroups/bench/providers/Bench/${step}/job${job}-${k}`;
}

const clusterJob = restate.workflow({
  name: "ClusterJob",
  handlers: {
    run: async (ctx, job) => {
      for (const step of shape) {
        for (let k = 0; k < step.checkpoints; k++) {
          await ctx.run(`${step.name}.${k}`, () => azureStandIn(job, step.name, k));
        }
      }
      return "Succeeded";
    },
  },
});

/** Answers once the server can route invocations: the driver waits on it before timing. */
const ping = restate.service({ name: "Ping", handlers: { ping: async () => "pong" } });

const port = Number(process.argv[2]);
const server = http2.createServer(restate.createEndpointHandler({ services: [clusterJob, ping] }));
server.listen(port, "127.0.0.1", () => console.log("ready"));
