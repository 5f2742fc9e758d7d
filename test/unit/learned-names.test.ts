/**
 * Names in --allow: their syntax, how they match the names the DNS reader writes, and what the
 * VM's DNS answers teach (only global addresses, only the question's chain, for how long, and how
 * much at most).
 */
import { describe, expect, test } from "bun:test";
import { nameReport } from "../../src/name-report.ts";
import { DEFAULT_LEARNING_LIMITS, type LearnEvent, LearnedNames } from "../../src/policy/learned-names.ts";
import { looksLikeName, NamePatterns, parseNamePattern } from "../../src/policy/name-patterns.ts";
import { parseIpv4 } from "../../src/wire/bytes.ts";
import { type DnsMessageRepr, emitDnsMessage, readDnsMessage } from "../../src/wire/dns.ts";

const ip = (text: string) => parseIpv4(text)!;

describe("name syntax in --allow", () => {
  test.each([
    ["github.com", { name: "github.com", wildcard: false }],
    ["GitHub.COM.", { name: "github.com", wildcard: false }],
    ["*.npmjs.org", { name: "npmjs.org", wildcard: true }],
    ["_dmarc.example.com", { name: "_dmarc.example.com", wildcard: false }],
    ["localhost", { name: "localhost", wildcard: false }],
    [`${"a".repeat(63)}.com`, { name: `${"a".repeat(63)}.com`, wildcard: false }],
  ])("%s is a name", (text, want) => {
    expect(parseNamePattern(text)).toEqual(want);
  });

  test.each([
    ["", "empty"],
    [".", "empty"],
    ["*", 'bare "*"'],
    ["a..b", "empty label"],
    [".example.com", "empty label"],
    ["a.*.com", '"*" may only stand'],
    ["*example.com", '"*" may only stand'],
    ["*.*.example.com", '"*" may only stand'],
    ["ex ample.com", "character other than"],
    ["exa$mple.com", "character other than"],
    ["exämple.com", "character other than"],
    [`${"a".repeat(64)}.com`, "longer than 63"],
    [`${"abcdefgh.".repeat(28)}com`, "longer than 253"],
  ])("%j is refused (%s)", (text, why) => {
    const result = parseNamePattern(text);
    expect(typeof result).toBe("string");
    expect(result as string).toContain(why);
  });

  test.each([
    ["github.com", true],
    ["*.npmjs.org", true],
    ["10.0.0.0/8", false],
    ["1.2.3.4", false],
    ["@host", false],
  ])("%s looks like a name: %p", (text, want) => {
    expect(looksLikeName(text)).toBe(want);
  });
});

describe("matching names", () => {
  const patterns = new NamePatterns(
    ["github.com", "*.githubusercontent.com", "*.npmjs.org", "registry.npmjs.org"].map(
      (text) => parseNamePattern(text) as Exclude<ReturnType<typeof parseNamePattern>, string>,
    ),
  );
  test.each([
    ["github.com", "github.com"],
    ["api.github.com", undefined],
    ["objects.githubusercontent.com", "*.githubusercontent.com"],
    ["a.b.githubusercontent.com", "*.githubusercontent.com"],
    ["githubusercontent.com", undefined],
    ["registry.npmjs.org", "registry.npmjs.org"],
    ["npmjs.org", undefined],
    ["evilgithubusercontent.com", undefined],
    ["github.com.evil.example", undefined],
    ["x\\046githubusercontent.com", undefined],
  ])("%s -> %p", (name, want) => {
    expect(patterns.match(name)).toBe(want);
  });
});

function answer(repr: Omit<DnsMessageRepr, "id" | "response">) {
  const bytes = emitDnsMessage({ id: 1, response: true, ...repr });
  return readDnsMessage(bytes, 0, bytes.length)!;
}

function learner(allow: string[], limits = DEFAULT_LEARNING_LIMITS) {
  return new LearnedNames(
    new NamePatterns(
      allow.map((text) => parseNamePattern(text) as Exclude<ReturnType<typeof parseNamePattern>, string>),
    ),
    limits,
  );
}

describe("learning from answers", () => {
  test("an allowed name's global address is allowed for its TTL; another name's is only noted", () => {
    const learned = learner(["github.com"]);
    const events: LearnEvent[] = [];
    learned.learn(
      answer({
        question: { name: "github.com", type: 1 },
        answers: [{ owner: "github.com", type: "A", ttl: 120, address: ip("140.82.112.3") }],
      }),
      0,
      events,
    );
    learned.learn(
      answer({
        question: { name: "example.org", type: 1 },
        answers: [{ owner: "example.org", type: "A", ttl: 120, address: ip("93.184.216.34") }],
      }),
      0,
      events,
    );
    expect(learned.allows(ip("140.82.112.3"), 119_999)).toBe(true);
    expect(learned.allows(ip("140.82.112.3"), 120_000)).toBe(false);
    expect(learned.allows(ip("93.184.216.34"), 0)).toBe(false);
    expect(learned.nameOf(ip("93.184.216.34"))).toBe("example.org");
    expect(events).toEqual([
      {
        kind: "learned",
        name: "github.com",
        allowedBy: "github.com",
        address: ip("140.82.112.3"),
        seconds: 120,
      },
    ]);
  });

  test("an address reached through a CNAME to an unlisted name is learned for the asked name", () => {
    const learned = learner(["*.githubusercontent.com"]);
    learned.learn(
      answer({
        question: { name: "objects.githubusercontent.com", type: 1 },
        answers: [
          { owner: "objects.githubusercontent.com", type: "CNAME", ttl: 300, target: "cdn.fastly.example" },
          { owner: "cdn.fastly.example", type: "A", ttl: 30, address: ip("185.199.108.133") },
        ],
      }),
      0,
      [],
    );
    expect(learned.allows(ip("185.199.108.133"), 1_000)).toBe(true);
    expect(learned.nameOf(ip("185.199.108.133"))).toBe("objects.githubusercontent.com");
  });

  test("a private, loopback or link-local answer teaches nothing and is reported once per name", () => {
    const learned = learner(["rebind.example"]);
    const events: LearnEvent[] = [];
    for (const address of ["10.0.0.5", "127.0.0.1", "169.254.169.254", "10.0.0.5"]) {
      learned.learn(
        answer({
          question: { name: "rebind.example", type: 1 },
          answers: [{ owner: "rebind.example", type: "A", ttl: 60, address: ip(address) }],
        }),
        0,
        events,
      );
      expect(learned.allows(ip(address), 1)).toBe(false);
    }
    expect(events).toEqual([
      { kind: "not-global", name: "rebind.example", allowedBy: "rebind.example", address: ip("10.0.0.5") },
    ]);
  });

  test("a query (not a response), an error answer or an answer for another owner teaches nothing", () => {
    const learned = learner(["github.com"]);
    const query = emitDnsMessage({ id: 1, response: false, question: { name: "github.com", type: 1 } });
    learned.learn(readDnsMessage(query, 0, query.length)!, 0, []);
    learned.learn(
      answer({
        rcode: 2,
        question: { name: "github.com", type: 1 },
        answers: [{ owner: "github.com", type: "A", ttl: 60, address: ip("1.1.1.1") }],
      }),
      0,
      [],
    );
    learned.learn(
      answer({
        question: { name: "github.com", type: 1 },
        answers: [{ owner: "gitlab.com", type: "A", ttl: 60, address: ip("2.2.2.2") }],
      }),
      0,
      [],
    );
    expect(learned.allows(ip("1.1.1.1"), 1)).toBe(false);
    expect(learned.allows(ip("2.2.2.2"), 1)).toBe(false);
  });
});

describe("how long a learned address stays", () => {
  const learnAt = (learned: LearnedNames, ttl: number, nowMs: number) =>
    learned.learn(
      answer({
        question: { name: "github.com", type: 1 },
        answers: [{ owner: "github.com", type: "A", ttl, address: ip("140.82.112.3") }],
      }),
      nowMs,
      [],
    );

  test.each([
    [0, 60],
    [5, 60],
    [300, 300],
    [86_400, 3600],
  ])("a TTL of %i s keeps it %i s (floor 60, ceiling 3600)", (ttl, seconds) => {
    const learned = learner(["github.com"]);
    learnAt(learned, ttl, 0);
    expect(learned.allows(ip("140.82.112.3"), seconds * 1000 - 1)).toBe(true);
    expect(learned.allows(ip("140.82.112.3"), seconds * 1000)).toBe(false);
  });

  test("traffic keeps it past the TTL until it has been idle for 600 s", () => {
    const learned = learner(["github.com"]);
    learnAt(learned, 60, 0);
    for (let now = 0; now <= 1_800_000; now += 100_000) {
      expect(learned.allows(ip("140.82.112.3"), now)).toBe(true);
      learned.countForwarded(ip("140.82.112.3"), now);
    }
    expect(learned.allows(ip("140.82.112.3"), 1_800_000 + 599_999)).toBe(true);
    expect(learned.allows(ip("140.82.112.3"), 1_800_000 + 600_000)).toBe(false);
  });

  test("traffic after it was forgotten does not bring it back; a new answer does", () => {
    const learned = learner(["github.com"]);
    learnAt(learned, 60, 0);
    learned.countForwarded(ip("140.82.112.3"), 60_000);
    expect(learned.allows(ip("140.82.112.3"), 60_001)).toBe(false);
    learnAt(learned, 60, 100_000);
    expect(learned.allows(ip("140.82.112.3"), 100_001)).toBe(true);
  });

  test("expire() forgets what is over and keeps what is not", () => {
    const learned = learner(["github.com"]);
    learnAt(learned, 60, 0);
    expect(learned.expire(59_999)).toBe(0);
    expect(learned.size).toBe(1);
    expect(learned.expire(60_000)).toBe(1);
    expect(learned.size).toBe(0);
  });
});

describe("memory is bounded", () => {
  const many = (name: string, first: number, count: number, ttl = 60) =>
    answer({
      question: { name, type: 1 },
      answers: Array.from({ length: count }, (_, index) => ({
        owner: name,
        type: "A" as const,
        ttl,
        address: ip("100.64.0.0") - 0x00400000 + first + index, // 100.0.0.0 and up: global
      })),
    });

  test("a name keeps at most its cap, replacing the stalest, and says so once", () => {
    const learned = learner(["cdn.example"], { ...DEFAULT_LEARNING_LIMITS, addressesPerName: 4 });
    const events: LearnEvent[] = [];
    learned.learn(many("cdn.example", 0, 4, 100), 0, events);
    learned.learn(many("cdn.example", 4, 2, 200), 0, events);
    expect(learned.size).toBe(4);
    const base = ip("100.0.0.0");
    expect([0, 1, 2, 3, 4, 5].map((index) => learned.allows(base + index, 1))).toEqual([
      false,
      false,
      true,
      true,
      true,
      true,
    ]);
    expect(events.filter((event) => event.kind === "name-cap")).toEqual([
      { kind: "name-cap", name: "cdn.example", cap: 4 },
    ]);
  });

  test("beyond the total cap nothing new is learned until something expires, said once", () => {
    const learned = learner(["*.example"], { ...DEFAULT_LEARNING_LIMITS, addresses: 3 });
    const events: LearnEvent[] = [];
    learned.learn(many("a.example", 0, 3), 0, events);
    learned.learn(many("b.example", 10, 2), 0, events);
    learned.learn(many("c.example", 20, 1), 0, events);
    expect(learned.size).toBe(3);
    expect(learned.allows(ip("100.0.0.10"), 1)).toBe(false);
    expect(events.filter((event) => event.kind === "total-cap")).toEqual([{ kind: "total-cap", cap: 3 }]);
    learned.learn(many("b.example", 10, 1), 60_000, events);
    expect(learned.allows(ip("100.0.0.10"), 60_001)).toBe(true);
  });

  test("the report lists at most its cap of names; an allowed name past it still works", () => {
    const learned = learner(["late.example"], { ...DEFAULT_LEARNING_LIMITS, reportedNames: 2 });
    learned.countQuery("one.example", true);
    learned.countQuery("two.example", true);
    learned.countQuery("three.example", true);
    learned.learn(many("late.example", 0, 1), 0, []);
    expect(learned.records().map((record) => record.name)).toEqual(["one.example", "two.example"]);
    expect(learned.unlistedLookups).toBe(2);
    expect(learned.allows(ip("100.0.0.0"), 1)).toBe(true);
  });
});

describe("the report's counters", () => {
  test("queries, forwarded and dropped packets are counted per name", () => {
    const learned = learner(["github.com"]);
    learned.countQuery("github.com", true);
    learned.countQuery("evil.example", false);
    learned.learn(
      answer({
        question: { name: "github.com", type: 1 },
        answers: [{ owner: "github.com", type: "A", ttl: 60, address: ip("140.82.112.3") }],
      }),
      0,
      [],
    );
    learned.countForwarded(ip("140.82.112.3"), 1);
    learned.countForwarded(ip("140.82.112.3"), 2);
    learned.countDropped(ip("140.82.112.3"));
    const [github, evil] = learned.records();
    expect(github).toMatchObject({
      name: "github.com",
      allowedBy: "github.com",
      queriesPassed: 1,
      packetsForwarded: 2,
      packetsDropped: 1,
    });
    expect([...github.addresses]).toEqual([ip("140.82.112.3")]);
    expect(evil).toMatchObject({ name: "evil.example", allowedBy: "", queriesDropped: 1 });
  });
});

describe("the names report", () => {
  test("lists each name with its counts, and the two --allow lists a person acts on", () => {
    const learned = learner(["github.com"]);
    const learn = (name: string, address: string) =>
      learned.learn(
        answer({
          question: { name, type: 1 },
          answers: [{ owner: name, type: "A", ttl: 60, address: ip(address) }],
        }),
        0,
        [],
      );
    learned.countQuery("github.com", true);
    learn("github.com", "140.82.112.3");
    learned.countForwarded(ip("140.82.112.3"), 1);
    learned.countQuery("registry.npmjs.org", true);
    learn("registry.npmjs.org", "104.16.0.35");
    learned.countDropped(ip("104.16.0.35"));
    learned.countQuery("c2VjcmV0.evil.example", false);
    const report = nameReport(learned);
    expect(report.lines).toEqual([
      "  names looked up: 3",
      "    github.com: allowed by github.com; queries 1 passed, 0 dropped; addresses 140.82.112.3; packets 1 forwarded, 0 dropped",
      "    registry.npmjs.org: not allowed by name; queries 1 passed, 0 dropped; addresses 104.16.0.35; packets 0 forwarded, 1 dropped",
      "    c2VjcmV0.evil.example: not allowed by name; queries 0 passed, 1 dropped; addresses none; packets 0 forwarded, 0 dropped",
      "  to allow what was dropped: --allow registry.npmjs.org,c2VjcmV0.evil.example",
      "  names whose addresses carried traffic: --allow github.com",
    ]);
    expect(report.fields).toMatchObject({
      allow_to_pass_dropped: ["registry.npmjs.org", "c2VjcmV0.evil.example"],
      allow_what_was_used: ["github.com"],
      not_listed: 0,
    });
  });

  test("nothing looked up: one line", () => {
    expect(nameReport(learner([])).lines).toEqual(["  names: none looked up"]);
  });
});
