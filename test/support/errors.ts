/** What a call threw, for tests that then look at the error's type, message or cause chain. */
import { expect } from "bun:test";
import { SoftnetError } from "../../src/errors.ts";

export function thrownBy(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  return undefined;
}

/** Asserts that `run` throws a SoftnetError whose message matches, and returns it. */
export function expectSoftnetError(run: () => unknown, message: string | RegExp): SoftnetError {
  const caught = thrownBy(run);
  expect(caught).toBeInstanceOf(SoftnetError);
  expect((caught as SoftnetError).message).toMatch(message);
  return caught as SoftnetError;
}
