// A Node.js `ws` client for tests/test_server_clients.py: connects with the key in the
// x-api-key header, prints every server message as one line on stdout, exits after COUNT
// replica_cmd messages (exit 0) or on close/error (exit 1, the reason on stderr).
import WebSocket from "ws";
import { readFileSync } from "node:fs";

const [url, key, count, caFile] = process.argv.slice(2);
const options = { headers: { "x-api-key": key } };
if (caFile) options.ca = readFileSync(caFile);
const ws = new WebSocket(url, options);
let seen = 0;
const timer = setTimeout(() => { console.error("timeout"); process.exit(1); }, 30000);
ws.on("message", (data, isBinary) => {
  const text = data.toString("utf8");
  console.log(text);
  if (JSON.parse(text).type === "replica_cmd" && ++seen >= Number(count)) {
    clearTimeout(timer);
    ws.close(1000);
  }
});
ws.on("close", (code) => process.exit(seen >= Number(count) ? 0 : 1));
ws.on("unexpected-response", (req, res) => { console.error(`status ${res.statusCode}`); process.exit(1); });
ws.on("error", (err) => { console.error(String(err)); process.exit(1); });
