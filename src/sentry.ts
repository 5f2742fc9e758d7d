/**
 * Error reports to Sentry, only when SENTRY_DSN is set (as the original softnet does). The SDK is
 * imported lazily so a normal start pays nothing for it and nothing is ever sent without a DSN.
 */
import { VERSION } from "./version.ts";

type SentryModule = typeof import("@sentry/bun");
let sentry: SentryModule | undefined;

/** Parses CIRRUS_SENTRY_TAGS: `key=value,key2=value2`; entries without '=' are ignored. */
export function parseSentryTags(text: string | undefined): Record<string, string> {
  const tags: Record<string, string> = {};
  for (const entry of (text ?? "").split(",")) {
    const equals = entry.indexOf("=");
    if (equals <= 0) continue;
    tags[entry.slice(0, equals).trim()] = entry.slice(equals + 1).trim();
  }
  return tags;
}

/** True when the environment asks for error reports (SENTRY_DSN set and not empty). */
export function errorReportsWanted(env: Record<string, string | undefined>): boolean {
  return env.SENTRY_DSN !== undefined && env.SENTRY_DSN !== "";
}

let enabled: Promise<boolean> | undefined;
let sdkCode: Promise<SentryModule> | undefined;

/**
 * Loads the SDK's code without starting it, when SENTRY_DSN asks for reports: part of loading the
 * program, so it happens before the privilege drop like the rest of softnet's own code (the
 * release binary embeds it; a checkout may be readable by root alone, and the drop target could
 * not read node_modules there). Loading opens no connection and reads nothing from the caller.
 */
export function loadErrorReporter(env: Record<string, string | undefined>): void {
  if (errorReportsWanted(env)) sdkCode ??= import("@sentry/bun");
}

/**
 * Starts Sentry, once, and only after the privilege drop: the DSN (where reports go) and the tags
 * come from whoever started softnet, and a setuid-root process must not open connections of that
 * user's choosing as root. The runtime calls this right after dropping; main calls it after
 * dropping for a report when set-up failed before the drop.
 */
export function enableErrorReports(env: Record<string, string | undefined>): Promise<boolean> {
  enabled ??= initSentry(env);
  return enabled;
}

async function initSentry(env: Record<string, string | undefined>): Promise<boolean> {
  const dsn = env.SENTRY_DSN;
  if (dsn === undefined || !errorReportsWanted(env)) return false;
  sdkCode ??= import("@sentry/bun");
  sentry = await sdkCode;
  sentry.init({
    dsn,
    release: `softnet@${VERSION}`,
    // Only errors: no tracing and no default integrations (no console breadcrumbs of frame data).
    tracesSampleRate: 0,
    defaultIntegrations: false,
  });
  const tags = parseSentryTags(env.CIRRUS_SENTRY_TAGS);
  for (const [key, value] of Object.entries(tags)) sentry.setTag(key, value);
  return true;
}

/** Captures a fatal error and waits (bounded) until it is delivered. */
export async function reportFatal(error: unknown, message: string): Promise<void> {
  if (sentry === undefined) return;
  sentry.captureException(error, { extra: { summary: message } });
  await sentry.flush(3000);
}

/** A warning worth knowing about in the field (e.g. ENOBUFS toward the VM), sent once per kind. */
const warnedOnce = new Set<string>();
export function reportWarningOnce(kind: string, message: string): void {
  if (sentry === undefined || warnedOnce.has(kind)) return;
  warnedOnce.add(kind);
  sentry.captureMessage(message, "warning");
}
