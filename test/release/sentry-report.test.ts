// Error reports from the release binary itself. The build splits the bundle into chunks and
// @sentry/bun is one of its own, loaded from inside the binary only when SENTRY_DSN is set
// (scripts/build.ts): this proves the chunk is there and works, which the unit test (test/unit/
// sentry.test.ts, on `bun src/main.ts`) cannot.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { canRunLinuxX64, releaseDist } from "./release-build.ts";

const envelopes: string[] = [];
const server = Bun.serve({
  hostname: "127.0.0.1",
  port: 0,
  async fetch(request) {
    const bytes = new Uint8Array(await request.arrayBuffer());
    const body = request.headers.get("content-encoding") === "gzip" ? Bun.gunzipSync(bytes) : bytes;
    if (new URL(request.url).pathname === "/api/42/envelope/") envelopes.push(new TextDecoder().decode(body));
    return new Response("{}", { headers: { "content-type": "application/json" } });
  },
});
afterAll(() => server.stop(true));

/** The release binary failing fatally (fd 987 is not open), with `env` as its whole environment. */
async function failingRelease(env: Record<string, string>) {
  const dist = await releaseDist();
  const child = Bun.spawn(
    [
      join(dist, "softnet-linux-x64"),
      "--vm-fd",
      "987",
      "--vm-mac-address",
      "12:34:56:78:9a:bc",
      "--bridge",
      "nonexistent0",
    ],
    { stdout: "pipe", stderr: "pipe", env },
  );
  const [stderr, code] = await Promise.all([new Response(child.stderr).text(), child.exited]);
  return { stderr, code };
}

test.skipIf(!canRunLinuxX64 && !REQUIRED_IN_CI)(
  "the release binary reports a fatal error to SENTRY_DSN, with its release and tags, and sends nothing without it",
  async () => {
    const reported = await failingRelease({
      SENTRY_DSN: `http://publickey@127.0.0.1:${server.port}/42`,
      CIRRUS_SENTRY_TAGS: "suite=release",
    });
    expect(reported.code).toBe(1);
    expect(reported.stderr).toMatch(/^softnet: --vm-fd 987 is not an open file descriptor[^\n]*\n$/);
    expect(envelopes.length).toBeGreaterThanOrEqual(1);
    const event = envelopes.join("\n");
    expect(event).toMatch(/"release":"softnet@\d+\.\d+\.\d+/);
    expect(event).toContain('"suite":"release"');
    expect(event).toContain("is not an open file descriptor");

    envelopes.length = 0;
    const silent = await failingRelease({ CIRRUS_SENTRY_TAGS: "suite=release" });
    expect(silent.code).toBe(1);
    await Bun.sleep(500); // time for a (wrongly) started SDK to send
    expect(envelopes).toEqual([]);
  },
  120_000,
);
