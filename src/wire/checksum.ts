/** The Internet checksum (RFC 1071): one's complement sum of 16-bit words. */

/** Adds bytes[offset..offset+length) to a running 32-bit sum (not yet folded). */
export function sumWords(bytes: Uint8Array, offset: number, length: number, initial = 0): number {
  let sum = initial;
  const end = offset + length;
  let i = offset;
  for (; i + 1 < end; i += 2) sum += (bytes[i] << 8) | bytes[i + 1];
  if (i < end) sum += bytes[i] << 8;
  return sum;
}

/** Folds a running sum to 16 bits and complements it. */
export function finishChecksum(sum: number): number {
  return ~foldSum(sum) & 0xffff;
}

export function internetChecksum(bytes: Uint8Array, offset: number, length: number): number {
  return finishChecksum(sumWords(bytes, offset, length));
}

/** The IPv4 pseudo-header sum that UDP and TCP checksums start from. */
export function pseudoHeaderSum(
  source: number,
  destination: number,
  protocol: number,
  length: number,
): number {
  return (
    (source >>> 16) + (source & 0xffff) + (destination >>> 16) + (destination & 0xffff) + protocol + length
  );
}

/**
 * The checksum field's new value after some of the bytes it covers were set to zero, without
 * summing the packet again: RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), summed over every changed
 * word. A cleared byte contributes -m and nothing back, so all of them together are one ~S term,
 * where `clearedSum` is S: the cleared bytes added as they sat in their 16-bit words (a byte at an
 * even distance from the start of the checksummed data is the high half). Because the update is
 * relative, a checksum that was wrong before stays wrong after.
 */
export function checksumAfterClearing(checksum: number, clearedSum: number): number {
  const cleared = foldSum(clearedSum);
  return ~foldSum((~checksum & 0xffff) + (~cleared & 0xffff)) & 0xffff;
}

/**
 * The checksum field's new value after words it covers changed from summing to `oldSum` to
 * summing to `newSum` (running sums as sumWords makes them): RFC 1624 eqn. 3, HC' = ~(~HC + ~m +
 * m'), with the one's complement sum of the ~m terms taken as ~(sum of m).
 */
export function checksumAfterReplacing(checksum: number, oldSum: number, newSum: number): number {
  const removed = ~foldSum(oldSum) & 0xffff;
  return ~foldSum((~checksum & 0xffff) + removed + foldSum(newSum)) & 0xffff;
}

/** Folds a running sum to 16 bits with end-around carry, not complemented. */
function foldSum(sum: number): number {
  let folded = sum;
  while (folded > 0xffff) folded = (folded & 0xffff) + Math.floor(folded / 0x10000);
  return folded;
}
