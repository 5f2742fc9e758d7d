/**
 * The DNS reader (src/wire/dns.ts) against answers a real server sent, against malformed messages
 * that must read as malformed and never throw, and against its own builder (both directions).
 */
import { describe, expect, test } from "bun:test";
import { parseIpv4 } from "../../src/wire/bytes.ts";
import {
  addressesForQuestion,
  canonicalChain,
  DnsType,
  emitDnsMessage,
  readDnsMessage,
  readDnsQuestionName,
} from "../../src/wire/dns.ts";

const hex = (text: string) => Uint8Array.from(text.match(/../g)!.map((byte) => Number.parseInt(byte, 16)));
const ip = (text: string) => parseIpv4(text)!;

// Responses of dnsmasq 2.90 (Debian bookworm) to queries for A records, with local records
// (host-record, cname, local-ttl=30) configured in it; read off the wire as they arrived. Its
// answers compress names with pointers to the question (c00c) and to earlier targets.
const CAPTURED = {
  // www.example.test CNAME example.test; example.test A 93.184.216.34
  cnameThenA:
    "12348580000100020000000003777777076578616d706c6504746573740000010001c00c000500010000001e000e07657861" +
    "6d706c65047465737400c02e000100010000001e00045db8d822",
  // objects.githubusercontent.test CNAME github.map.edge.test CNAME cdn.edge.test; two A records
  twoCnamesTwoAddresses:
    "123485800001000400000000076f626a656374731167697468756275736572636f6e74656e7404746573740000010001c00c" +
    "000500010000001e001606676974687562036d61700465646765047465737400c03c000500010000001e000f0363646e0465" +
    "646765047465737400c05e000100010000001e000497650101c05e000100010000001e000497654101",
  // rebind.test A 10.0.0.5
  privateAddress:
    "12348580000100010000000006726562696e6404746573740000010001c00c000100010000001e00040a000005",
  // asked as Example.Test: the server echoes the case of the question
  mixedCase: "123485800001000100000000074578616d706c6504546573740000010001c00c000100010000001e00045db8d822",
  // nx.test: REFUSED (the server had no upstream for it), no answers
  refused: "123481850001000000000000026e7804746573740000010001",
} as const;

function read(text: string) {
  const bytes = hex(text);
  return readDnsMessage(bytes, 0, bytes.length);
}

describe("reading real answers", () => {
  test("a CNAME and its A record, compressed: the address belongs to the question", () => {
    const message = read(CAPTURED.cnameThenA)!;
    expect(message).toMatchObject({ id: 0x1234, isResponse: true, rcode: 0, truncated: false });
    expect(message.questionName).toBe("www.example.test");
    expect(message.questionType).toBe(DnsType.A);
    expect(message.answers).toEqual([
      { owner: "www.example.test", type: DnsType.CNAME, ttl: 30, address: 0, target: "example.test" },
      { owner: "example.test", type: DnsType.A, ttl: 30, address: ip("93.184.216.34"), target: "" },
    ]);
    expect(canonicalChain(message)).toEqual(["www.example.test", "example.test"]);
    expect(addressesForQuestion(message).map((answer) => answer.address)).toEqual([ip("93.184.216.34")]);
  });

  test("a chain of two CNAMEs with pointers into earlier targets, two addresses", () => {
    const message = read(CAPTURED.twoCnamesTwoAddresses)!;
    expect(canonicalChain(message)).toEqual([
      "objects.githubusercontent.test",
      "github.map.edge.test",
      "cdn.edge.test",
    ]);
    expect(addressesForQuestion(message).map((answer) => answer.address)).toEqual([
      ip("151.101.1.1"),
      ip("151.101.65.1"),
    ]);
  });

  test("names read lowercase whatever case the question had", () => {
    const message = read(CAPTURED.mixedCase)!;
    expect(message.questionName).toBe("example.test");
    expect(message.answers[0].owner).toBe("example.test");
  });

  test("a refusal: rcode 5 and no answers", () => {
    const message = read(CAPTURED.refused)!;
    expect(message.rcode).toBe(5);
    expect(message.answers).toEqual([]);
  });

  test("the question of a query, read alone", () => {
    const query = emitDnsMessage({ id: 7, response: false, question: { name: "Api.GitHub.com", type: 28 } });
    expect(readDnsQuestionName(query, 0, query.length)).toBe("api.github.com");
  });

  test("a message at an offset inside a frame is read in place", () => {
    const bytes = hex(`ffffffff${CAPTURED.cnameThenA}eeee`);
    const message = readDnsMessage(bytes, 4, bytes.length - 6)!;
    expect(addressesForQuestion(message).map((answer) => answer.address)).toEqual([ip("93.184.216.34")]);
  });
});

describe("only the question's chain is learned", () => {
  test("an A record for a name nobody asked about is not the question's", () => {
    const message = readDnsMessage(
      ...whole(
        emitDnsMessage({
          id: 1,
          response: true,
          question: { name: "github.com", type: 1 },
          answers: [
            { owner: "github.com", type: "A", ttl: 60, address: ip("140.82.112.3") },
            { owner: "evil.example", type: "A", ttl: 60, address: ip("203.0.113.9") },
          ],
        }),
      ),
    )!;
    expect(addressesForQuestion(message).map((answer) => answer.address)).toEqual([ip("140.82.112.3")]);
  });

  test("a CNAME from another owner does not extend the chain; a CNAME loop ends", () => {
    const message = readDnsMessage(
      ...whole(
        emitDnsMessage({
          id: 1,
          response: true,
          question: { name: "a.test", type: 1 },
          answers: [
            { owner: "x.test", type: "CNAME", ttl: 60, target: "evil.test" },
            { owner: "a.test", type: "CNAME", ttl: 60, target: "b.test" },
            { owner: "b.test", type: "CNAME", ttl: 60, target: "a.test" },
            { owner: "evil.test", type: "A", ttl: 60, address: ip("203.0.113.9") },
            { owner: "b.test", type: "A", ttl: 60, address: ip("198.51.100.1") },
          ],
        }),
      ),
    )!;
    expect(canonicalChain(message)).toEqual(["a.test", "b.test"]);
    expect(addressesForQuestion(message).map((answer) => answer.address)).toEqual([ip("198.51.100.1")]);
  });
});

function whole(bytes: Uint8Array): [Uint8Array, number, number] {
  return [bytes, 0, bytes.length];
}

describe("builder and reader mirror each other", () => {
  test("A, CNAME, TTL with the top bit set reads as 0 (RFC 2181 8)", () => {
    const bytes = emitDnsMessage({
      id: 0xbeef,
      response: true,
      question: { name: "a.b.example", type: 1 },
      answers: [
        { owner: "a.b.example", type: "CNAME", ttl: 5, target: "c.example" },
        { owner: "c.example", type: "A", ttl: 0x80000001, address: ip("192.0.2.1") },
      ],
    });
    const message = readDnsMessage(bytes, 0, bytes.length)!;
    expect(message.id).toBe(0xbeef);
    expect(message.answers.map((answer) => [answer.owner, answer.ttl])).toEqual([
      ["a.b.example", 5],
      ["c.example", 0],
    ]);
  });
});

describe("malformed messages read as malformed, never throw", () => {
  const header = (questions: number, answers: number) =>
    `1234 8180 ${questions.toString(16).padStart(4, "0")} ${answers.toString(16).padStart(4, "0")} 0000 0000`;
  const cases: Array<[string, string]> = [
    ["shorter than a header", "1234 8180 0001 00"],
    ["a question count larger than the message", `${header(3, 0)} 0161 00 0001 0001`],
    ["a label running past the end", `${header(1, 0)} 05 6162`],
    ["a pointer to itself (a loop)", `${header(1, 0)} c00c 0001 0001`],
    ["a pointer forward", `${header(1, 0)} c00e 0001 0001 00`],
    ["a pointer past the end", `${header(1, 0)} c0ff 0001 0001`],
    ["a pointer cut in half", `${header(1, 0)} c0`],
    ["an extended label type (01)", `${header(1, 0)} 41 61 00 0001 0001`],
    ["a reserved label type (10)", `${header(1, 0)} 81 61 00 0001 0001`],
    ["a question without type and class", `${header(1, 0)} 0161 00 00`],
    [
      "an answer count larger than the message",
      `${header(1, 2)} 0161 00 0001 0001 c00c 0001 0001 0000003c 0004 01020304`,
    ],
    [
      "an answer whose data runs past the end",
      `${header(1, 1)} 0161 00 0001 0001 c00c 0001 0001 0000003c 0008 01020304`,
    ],
    [
      "an A record with 3 bytes of data",
      `${header(1, 1)} 0161 00 0001 0001 c00c 0001 0001 0000003c 0003 010203`,
    ],
    [
      "a CNAME whose target leaves its data",
      `${header(1, 1)} 0161 00 0001 0001 c00c 0005 0001 0000003c 0002 0162 00`,
    ],
    [
      "a CNAME with bytes after its target",
      `${header(1, 1)} 0161 00 0001 0001 c00c 0005 0001 0000003c 0003 00 0000`,
    ],
  ];
  test.each(cases)("%s", (_title, text) => {
    const bytes = hex(text.replace(/\s+/g, ""));
    expect(readDnsMessage(bytes, 0, bytes.length)).toBeUndefined();
  });

  test("a name over 255 octets is refused, one of 255 is read", () => {
    // 5 labels of 63 bytes = 320 octets: the name is too long even though every label is valid.
    const label = `3f${"61".repeat(63)}`;
    const bytes = hex(`${header(1, 0).replace(/\s+/g, "")}${label.repeat(5)}0000010001`);
    expect(readDnsMessage(bytes, 0, bytes.length)).toBeUndefined();
    const four = hex(
      `${header(1, 0).replace(/\s+/g, "")}${label.repeat(3)}${`3d${"61".repeat(61)}`}0000010001`,
    );
    expect(readDnsMessage(four, 0, four.length)?.questionName.length).toBe(253);
  });

  test("the message's length bounds the read, not the buffer's", () => {
    const bytes = hex(CAPTURED.cnameThenA);
    expect(readDnsMessage(bytes, 0, bytes.length - 1)).toBeUndefined();
    expect(readDnsMessage(bytes, 0, bytes.length + 1)).toBeUndefined();
  });

  test("every truncation and every single-byte change of a real answer is read or refused, never thrown", () => {
    const original = hex(CAPTURED.twoCnamesTwoAddresses);
    for (let length = 0; length <= original.length; length++) readDnsMessage(original, 0, length);
    for (let index = 0; index < original.length; index++) {
      for (const value of [0x00, 0x3f, 0x40, 0x80, 0xc0, 0xff]) {
        const bytes = original.slice();
        bytes[index] = value;
        const message = readDnsMessage(bytes, 0, bytes.length);
        if (message !== undefined) canonicalChain(message);
      }
    }
  });
});

describe("bytes that are not letters, digits, - or _ are escaped in names", () => {
  test("a dot inside a label does not read as a label boundary", () => {
    // one label "github.com" (10 bytes) under "evil": github\046com.evil
    const bytes = hex(`1234010000010000000000000a6769746875622e636f6d046576696c0000010001`);
    expect(readDnsQuestionName(bytes, 0, bytes.length)).toBe("github\\046com.evil");
  });

  test("control bytes and spaces are escaped, so names are safe to log", () => {
    const bytes = hex("123401000001000000000000" + "03610a20" + "00" + "00010001");
    expect(readDnsQuestionName(bytes, 0, bytes.length)).toBe("a\\010\\032");
  });
});
