// Stand-ins for what a Mac would answer the doctor's host checks (src/doctor/darwin-host.ts): the
// files in test/darwin/fixtures/host/, built from the formats in Apple's sources and the outputs
// quoted in the threads each file's name points to. A scenario picks one file per question; the
// doctor gets them through a DarwinHostReader, as it gets the real ones through
// PRODUCTION_HOST_READER on a Mac. Test code only.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { DarwinHostReader, HostCommand } from "../../src/doctor/darwin-host.ts";

export const HOST_FIXTURES = join(import.meta.dir, "fixtures", "host");

export interface HostScenario {
  /** A leases.* fixture, literal text ({ text }), "missing", or "unreadable". */
  readonly leases?: string | { readonly text: string };
  /** True: an MDM profile manages the firewall. */
  readonly managed?: boolean;
  readonly global?: string;
  readonly blockall?: string;
  readonly bootpd?: string;
  readonly allowsigned?: string;
  /** A routes.* fixture, or literal text. */
  readonly routes?: string | { readonly text: string };
  readonly service?: "running" | "missing";
  readonly preferences?: string;
  /** Seconds since the epoch the doctor takes as now (leases in the fixtures expire around 0x685bf9xx). */
  readonly now?: number;
}

/** Firewall on and permitting bootpd, three leases, plain routes, bootpd loaded. */
export const HEALTHY: Required<Omit<HostScenario, "leases" | "routes">> & {
  leases: string;
  routes: string;
} = {
  leases: "leases.healthy",
  managed: false,
  global: "firewall-global.on",
  blockall: "firewall-blockall.off",
  bootpd: "firewall-apps.permitted",
  allowsigned: "firewall-allowsigned.enabled",
  routes: "routes.plain",
  service: "running",
  preferences: "vmnet-preferences.xml",
  now: 0x685bf000,
};

export function fixtureReader(overrides: HostScenario = {}): DarwinHostReader {
  const scenario = { ...HEALTHY, ...overrides };
  // Every fixture is read now, while the doctor is still root: it reads the host's state after it
  // dropped to nobody, who may not reach a checkout only root can read.
  const files = new Map(
    readdirSync(HOST_FIXTURES).map((name) => [name, readFileSync(join(HOST_FIXTURES, name), "utf8")]),
  );
  const fixture = (name: string): string => {
    const text = files.get(name);
    if (text === undefined) throw new Error(`no fixture ${name} in ${HOST_FIXTURES}`);
    return text;
  };
  const text = (value: string | { readonly text: string }) =>
    typeof value === "string" ? fixture(value) : value.text;
  const outputs: Record<HostCommand, () => { code: number; stdout: string; stderr: string }> = {
    "firewall-global": () => ({ code: 0, stdout: fixture(scenario.global), stderr: "" }),
    "firewall-blockall": () => ({ code: 0, stdout: fixture(scenario.blockall), stderr: "" }),
    "firewall-apps": () => ({ code: 0, stdout: fixture(scenario.bootpd), stderr: "" }),
    "firewall-allowsigned": () => ({ code: 0, stdout: fixture(scenario.allowsigned), stderr: "" }),
    routes: () => ({ code: 0, stdout: text(scenario.routes), stderr: "" }),
    "bootpd-service": () =>
      scenario.service === "running"
        ? { code: 0, stdout: fixture("bootpd-service.running"), stderr: "" }
        : { code: 113, stdout: "", stderr: fixture("bootpd-service.missing") },
    "vmnet-preferences": () => ({ code: 0, stdout: fixture(scenario.preferences), stderr: "" }),
  };
  return {
    readFile(file) {
      if (file === "firewall-managed")
        return scenario.managed ? { kind: "text", text: "<plist/>" } : { kind: "missing" };
      if (scenario.leases === "missing") return { kind: "missing" };
      if (scenario.leases === "unreadable") return { kind: "unreadable", why: "EACCES: permission denied" };
      return { kind: "text", text: text(scenario.leases) };
    },
    run: async (command) => outputs[command](),
    now: () => scenario.now,
  };
}

/** A lease file with `count` live entries in 192.168.64.0/24, from .2 up. */
export function fullLeaseFile(count: number, expiresAt: number): string {
  const entries: string[] = [];
  for (let at = 0; at < count; at++) {
    const host = 2 + at;
    const mac = `1,2:0:0:0:${(host >> 8).toString(16)}:${(host & 0xff).toString(16)}`;
    entries.push(
      `{\n\tname=vm-${host}\n\tip_address=192.168.64.${host}\n\thw_address=${mac}\n\tidentifier=${mac}\n` +
        `\tlease=0x${expiresAt.toString(16)}\n}\n`,
    );
  }
  return entries.join("");
}
