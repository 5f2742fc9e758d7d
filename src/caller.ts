/**
 * Who started softnet: the one answer that the privilege drop, --user/--group, the bridge access
 * list (and its per-user cap), the privileged-port guard and the doctor all ask. Pure: the ids the
 * process had at exec and its environment come in, a Caller goes out.
 *
 * - root: the real uid is 0 and no unprivileged user is behind it (root's own shell, a service,
 *   or `sudo` run by root: SUDO_UID=0). Root may choose anything, --user root included.
 * - sudo-user: the real uid is 0 because sudo made it so for the user named in SUDO_UID/SUDO_GID
 *   (sudo(8), ENVIRONMENT: "SUDO_UID: Set to the user-ID of the user who invoked sudo",
 *   "SUDO_GID: Set to the group-ID of the user who invoked sudo"). That user is the caller; root
 *   is only sudo's means of letting softnet open the host link.
 * - setuid-user: the real uid is not 0 (the setuid bit, file capabilities, or a user's own copy
 *   before it asks sudo). The real uid and gid are the caller, and the supplementary groups it had
 *   at exec are exactly the ones it gets back.
 *
 * SUDO_UID/SUDO_GID are believed only when the real uid is 0: a setuid binary's environment
 * belongs to its caller, who could otherwise name anyone. And under a real uid of 0 only sudo (or
 * root itself) can have set them, so believing them never gives anyone more than root gave.
 */

export type CallerKind = "root" | "sudo-user" | "setuid-user";

export interface Caller {
  readonly kind: CallerKind;
  /** The person's uid: 0 for root, SUDO_UID for sudo-user, the real uid for setuid-user. */
  readonly uid: number;
  /** Their gid: the real gid for root and setuid-user, SUDO_GID (else their passwd group) for sudo-user. */
  readonly gid: number;
  /**
   * setuid-user: the supplementary groups the process had at exec (getgroups), which the drop
   * restores exactly. undefined for the others: a sudo-user gets the groups the group database
   * gives them (initgroups), as sudo's own "run as that user" would; root's target is its choice.
   */
  readonly groups: readonly number[] | undefined;
}

/** What the process had when it was started, read before anything changes it. */
export interface StartCredentials {
  /** getuid() */
  readonly uid: number;
  /** getgid() */
  readonly gid: number;
  /** getgroups() */
  readonly groups: readonly number[];
}

/** An id as sudo writes it: decimal, no sign, within uid_t/gid_t and not (uid_t)-1. */
function parseId(text: string | undefined): number | undefined {
  if (text === undefined || !/^[0-9]{1,10}$/.test(text)) return undefined;
  const id = Number(text);
  return id < 0xffff_ffff ? id : undefined;
}

/**
 * Decides who started softnet. `primaryGidOf` answers the passwd group of a uid, used only when
 * root runs softnet with a SUDO_UID but no usable SUDO_GID (sudo always sets both).
 */
export function decideCaller(
  started: StartCredentials,
  env: Readonly<Record<string, string | undefined>>,
  primaryGidOf: (uid: number) => number | undefined = () => undefined,
): Caller {
  if (started.uid !== 0) {
    return { kind: "setuid-user", uid: started.uid, gid: started.gid, groups: [...started.groups] };
  }
  const sudoUid = parseId(env.SUDO_UID);
  if (sudoUid === undefined || sudoUid === 0) {
    return { kind: "root", uid: 0, gid: started.gid, groups: undefined };
  }
  const gid = parseId(env.SUDO_GID) ?? primaryGidOf(sudoUid) ?? sudoUid;
  return { kind: "sudo-user", uid: sudoUid, gid, groups: undefined };
}

/** "root", "uid 1000 (through sudo)", "uid 1000 (through the setuid bit)": for messages. */
export function describeCaller(caller: Caller): string {
  if (caller.kind === "root") return "root";
  return `uid ${caller.uid} (${caller.kind === "sudo-user" ? "through sudo" : "through the setuid bit"})`;
}
