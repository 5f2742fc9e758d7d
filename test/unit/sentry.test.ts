/**
 * Error reports: with SENTRY_DSN pointing at a local endpoint, a fatal error arrives there as an
 * envelope carrying the error, the release and the CIRRUS_SENTRY_TAGS tags; without SENTRY_DSN
 * softnet sends nothing.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { parseSentryTags } from "../../src/sentry.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";

const received: Array<{ path: string; body: string; senderUids: string | undefined }> = [];
/** The softnet process being tested, so the server can ask the kernel who it runs as mid-report. */
let senderPid: number | undefined;
const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  async fetch(request) {
    // Read while softnet waits for this very request (reportFatal flushes before it exits).
    const senderUids = uidsOf(senderPid);
    const body = await decode(request);
    received.push({ path: new URL(request.url).pathname, body, senderUids });
    return new Response("{}", { headers: { "content-type": "application/json" } });
  },
});
afterAll(() => server.stop(true));

/** "real effective saved filesystem" uids of a live process, from /proc. */
function uidsOf(pid: number | undefined): string | undefined {
  if (pid === undefined) return undefined;
  try {
    return readFileSync(`/proc/${pid}/status`, "utf8")
      .match(/^Uid:\s*(.*)$/m)?.[1]
      ?.trim()
      .split(/\s+/)
      .join(" ");
  } catch {
    return undefined;
  }
}

async function decode(request: Request): Promise<string> {
  const bytes = new Uint8Array(await request.arrayBuffer());
  if (request.headers.get("content-encoding") === "gzip")
    return new TextDecoder().decode(Bun.gunzipSync(bytes));
  return new TextDecoder().decode(bytes);
}

/** Fails fatally (not a usage error): fd 987 is not open, so there is no VM to serve. */
async function failingSoftnet(env: Record<string, string>) {
  const child = Bun.spawn(
    [
      process.execPath,
      "src/main.ts",
      "--vm-fd",
      "987",
      "--vm-mac-address",
      "12:34:56:78:9a:bc",
      "--bridge",
      "nonexistent0",
    ],
    { stdout: "pipe", stderr: "pipe", env: { PATH: process.env.PATH ?? "", ...env } },
  );
  senderPid = child.pid;
  const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited]);
  return { stderr, code };
}

describe("Sentry", () => {
  test("CIRRUS_SENTRY_TAGS parses as k=v pairs", () => {
    expect(parseSentryTags("a=1,b=two, c = 3 ,broken,=x")).toEqual({ a: "1", b: "two", c: "3" });
    expect(parseSentryTags(undefined)).toEqual({});
  });

  test("a fatal error is delivered to SENTRY_DSN with the tags, before softnet exits 1", async () => {
    received.length = 0;
    const dsn = `http://publickey@127.0.0.1:${server.port}/42`;
    const result = await failingSoftnet({ SENTRY_DSN: dsn, CIRRUS_SENTRY_TAGS: "ci_task=123,vm=ventura" });
    expect(result.code).toBe(1);
    expect(result.stderr.split("\n").filter(Boolean)).toHaveLength(1);
    const firstLine = result.stderr.trim();
    expect(firstLine.startsWith("softnet: ")).toBe(true);
    const envelopes = received.filter((r) => r.path === "/api/42/envelope/");
    expect(envelopes.length).toBeGreaterThanOrEqual(1);
    const event = envelopes.map((e) => e.body).join("\n");
    expect(event).toContain('"ci_task":"123"');
    expect(event).toContain('"vm":"ventura"');
    expect(event).toMatch(/"release":"softnet@\d+\.\d+\.\d+/);
    expect(event).toContain('"exception"');
    // The error's own text (after "softnet: ") is in the report.
    const what = firstLine.slice("softnet: ".length).split(":")[0];
    expect(event).toContain(what);
  });

  // The DSN is the caller's choice: a setuid-root softnet must not connect where they say as root.
  // This run fails before the drop (fd 987), so softnet drops first, then reports.
  test.skipIf(process.getuid?.() !== 0 && !REQUIRED_IN_CI)(
    "the report leaves after the privilege drop, never from root",
    async () => {
      received.length = 0;
      const dsn = `http://publickey@127.0.0.1:${server.port}/42`;
      const result = await failingSoftnet({ SENTRY_DSN: dsn });
      expect(result.code).toBe(1);
      const envelopes = received.filter((r) => r.path === "/api/42/envelope/");
      expect(envelopes.length).toBeGreaterThanOrEqual(1);
      const nobody = Bun.spawnSync(["id", "-u", "nobody"]).stdout.toString().trim();
      for (const envelope of envelopes)
        expect(envelope.senderUids).toBe(`${nobody} ${nobody} ${nobody} ${nobody}`);
    },
  );

  test("without SENTRY_DSN nothing is sent", async () => {
    received.length = 0;
    const result = await failingSoftnet({ CIRRUS_SENTRY_TAGS: "ci_task=123" });
    expect(result.code).toBe(1);
    // Give a (wrongly) started SDK time to send before concluding nothing came.
    await Bun.sleep(500);
    expect(received).toEqual([]);
  });
});
