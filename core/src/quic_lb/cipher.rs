//! The two keyed algorithms of draft-ietf-quic-load-balancers-21 §5.4.1 and §5.4.2 (and
//! their load-balancer side, §5.5), on the octets after the first: the single-pass
//! AES-128-ECB block and the four-pass Feistel network.
//!
//! Everything here works on plain byte slices whose lengths the config has already
//! checked: a plaintext of 5 to 19 octets for four passes, exactly 16 for a single pass.

use std::fmt;

use aes::Aes128;
use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};

/// The longest half of a four-pass plaintext: half of 19 octets, rounded up.
const MAX_HALF: usize = 10;

/// One half of a four-pass plaintext or ciphertext: the first `half_len` octets, then
/// zeros.
type Half = [u8; MAX_HALF];

/// A 16-octet key with its AES-128 key schedule expanded once, at config load.
///
/// Two keys are equal when their octets are. `Debug` never prints the key.
#[derive(Clone)]
pub(super) struct Key {
    octets: [u8; 16],
    aes: Aes128,
}

impl Key {
    /// Expands the key schedule for `octets`.
    pub(super) fn new(octets: [u8; 16]) -> Key {
        Key { octets, aes: Aes128::new(&Array::from(octets)) }
    }

    /// The key's octets.
    pub(super) fn octets(&self) -> &[u8; 16] {
        &self.octets
    }

    /// AES-128-ECB encryption of one block, in place.
    fn encrypt_block(&self, block: &mut [u8; 16]) {
        self.aes.encrypt_block(block.into());
    }

    /// AES-128-ECB decryption of one block, in place.
    fn decrypt_block(&self, block: &mut [u8; 16]) {
        self.aes.decrypt_block(block.into());
    }

    /// Single-pass encryption (§5.4.1): the 16 octets of server ID and nonce are one block.
    pub(super) fn single_pass_encrypt(&self, block: &mut [u8; 16]) {
        self.encrypt_block(block);
    }

    /// Single-pass decryption (§5.5.1): the 16 octets after the first are one block.
    pub(super) fn single_pass_decrypt(&self, block: &mut [u8; 16]) {
        self.decrypt_block(block);
    }

    /// The round function of pass `pass`: AES of `expand(total_len, pass, input)`, where
    /// expand puts the `half_len` input octets first, zeros after them, the plaintext length
    /// in octet 15 and the pass number in octet 16 (§5.4.2, "Useful functions").
    ///
    /// The octets of `input` past `half_len` are zero (every [`Half`] keeps them so), which
    /// lets this copy a fixed ten octets.
    fn round(&self, total_len: usize, pass: u8, input: &Half, half_len: usize) -> [u8; 16] {
        debug_assert!(input[half_len.min(MAX_HALF)..].iter().all(|&octet| octet == 0));
        let mut block = [0u8; 16];
        block[..MAX_HALF].copy_from_slice(input);
        block[14] = total_len as u8;
        block[15] = pass;
        self.encrypt_block(&mut block);
        block
    }

    /// Four-pass encryption (§5.4.2) of `plaintext` (5 to 19 octets, not 16) into `out`, of
    /// the same length.
    pub(super) fn four_pass_encrypt(&self, plaintext: &[u8], out: &mut [u8]) {
        let shape = Shape::of(plaintext.len());
        let (mut left, mut right) = shape.split(plaintext);
        // Steps 3 to 11: passes 1 and 3 change the right half, 2 and 4 the left.
        shape.xor_right(&mut right, &self.round(shape.total, 1, &left, shape.half));
        shape.xor_left(&mut left, &self.round(shape.total, 2, &right, shape.half));
        shape.xor_right(&mut right, &self.round(shape.total, 3, &left, shape.half));
        shape.xor_left(&mut left, &self.round(shape.total, 4, &right, shape.half));
        shape.join(&left, &right, out);
    }

    /// Four-pass decryption (§5.5.2) of `ciphertext` (5 to 19 octets, not 16) into `out`, of
    /// the same length: the passes of [`Key::four_pass_encrypt`] in reverse order.
    ///
    /// With `prefix_only` set the caller needs only the first `ciphertext.len() / 2` octets
    /// of `out` (the server ID, when it is no longer than the nonce): the last pass, which
    /// recovers only the right half, is skipped, and the rest of `out` is left zero. This is
    /// the three-pass shortcut of §5.5.2.
    pub(super) fn four_pass_decrypt(&self, ciphertext: &[u8], out: &mut [u8], prefix_only: bool) {
        let shape = Shape::of(ciphertext.len());
        let (mut left, mut right) = shape.split(ciphertext);
        shape.xor_left(&mut left, &self.round(shape.total, 4, &right, shape.half));
        shape.xor_right(&mut right, &self.round(shape.total, 3, &left, shape.half));
        shape.xor_left(&mut left, &self.round(shape.total, 2, &right, shape.half));
        if prefix_only {
            right = [0; MAX_HALF];
        } else {
            shape.xor_right(&mut right, &self.round(shape.total, 1, &left, shape.half));
        }
        shape.join(&left, &right, out);
    }
}

/// How a four-pass plaintext of `total` octets splits: two halves of `half` octets each,
/// which share the middle octet (one nibble each) when `total` is odd.
#[derive(Clone, Copy)]
struct Shape {
    total: usize,
    half: usize,
    odd: bool,
    /// The bits of a left half that belong to it: the first `half` octets, less the last
    /// nibble for an odd length.
    left_mask: Half,
    /// The bits of a right half that belong to it: the first `half` octets, less the first
    /// nibble for an odd length.
    right_mask: Half,
}

impl Shape {
    /// The shape of a `total`-octet plaintext; `total` is at most 19, so halves fit.
    fn of(total: usize) -> Shape {
        let total = total.min(2 * MAX_HALF - 1);
        let half = total.div_ceil(2);
        let odd = total % 2 == 1;
        let mut left_mask: Half = std::array::from_fn(|i| if i < half { 0xff } else { 0 });
        let mut right_mask = left_mask;
        if odd {
            left_mask[half - 1] = 0xf0;
            right_mask[0] = 0x0f;
        }
        Shape { total, half, odd, left_mask, right_mask }
    }

    /// Step 2: the first and last `half` octets; for an odd length the left half's last
    /// nibble and the right half's first nibble are cleared, so the middle octet's high
    /// nibble goes left and its low nibble right.
    fn split(&self, octets: &[u8]) -> (Half, Half) {
        let (mut left, mut right) = ([0; MAX_HALF], [0; MAX_HALF]);
        let octets = &octets[..self.total.min(octets.len())];
        for (to, from) in left[..self.half].iter_mut().zip(octets) {
            *to = *from;
        }
        let right_start = octets.len().saturating_sub(self.half);
        for (to, from) in right[..self.half].iter_mut().zip(&octets[right_start..]) {
            *to = *from;
        }
        for ((left, right), (left_mask, right_mask)) in
            left.iter_mut().zip(right.iter_mut()).zip(self.left_mask.iter().zip(&self.right_mask))
        {
            *left &= left_mask;
            *right &= right_mask;
        }
        (left, right)
    }

    /// XORs a round's output into the left half and keeps only the left half's bits: its
    /// `half` octets, less the last nibble for an odd length (steps 6, 7, 10 and 11).
    fn xor_left(&self, left: &mut Half, pad: &[u8; 16]) {
        for ((octet, pad), mask) in left.iter_mut().zip(pad).zip(&self.left_mask) {
            *octet = (*octet ^ pad) & mask;
        }
    }

    /// XORs a round's output into the right half and keeps only the right half's bits: its
    /// `half` octets, less the first nibble for an odd length (steps 4, 5, 8 and 9).
    fn xor_right(&self, right: &mut Half, pad: &[u8; 16]) {
        for ((octet, pad), mask) in right.iter_mut().zip(pad).zip(&self.right_mask) {
            *octet = (*octet ^ pad) & mask;
        }
    }

    /// Step 12: the halves back into `total` octets; for an odd length the middle octet is
    /// the left half's high nibble joined with the right half's low nibble.
    fn join(&self, left: &Half, right: &Half, out: &mut [u8]) {
        let len = self.total.min(out.len());
        let out = &mut out[..len];
        for (to, from) in out.iter_mut().zip(&left[..self.half]) {
            *to = *from;
        }
        let right_start = out.len().saturating_sub(self.half);
        if self.odd {
            // The middle octet: both halves hold a nibble of it, the other nibble zero.
            for (to, from) in out[right_start..].iter_mut().zip(&right[..self.half]).take(1) {
                *to |= *from;
            }
            for (to, from) in out[right_start..].iter_mut().zip(&right[..self.half]).skip(1) {
                *to = *from;
            }
        } else {
            for (to, from) in out[right_start..].iter_mut().zip(&right[..self.half]) {
                *to = *from;
            }
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.octets == other.octets
    }
}

impl Eq for Key {}

impl fmt::Debug for Key {
    /// Never shows the key: configs are logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// §5.4.2's "Useful functions" example: expand(0x06, 0x02, 0xaaba3c).
    #[test]
    fn expand_matches_the_drafts_example() {
        let mut input = [0u8; MAX_HALF];
        input[..3].copy_from_slice(&hex("aaba3c"));
        let mut block = [0u8; 16];
        block[..3].copy_from_slice(&input[..3]);
        block[14] = 6;
        block[15] = 2;
        assert_eq!(block.to_vec(), hex("aaba3c00000000000000000000000602"));
    }

    /// §5.4.2's worked encryption example, step by step: the split of step 2, and the
    /// finished ciphertext of step 12.
    ///
    /// The draft's step 10 prints the AES output as 0xb334357c… and then XORs with
    /// 0xb3e4357c; the result it gives (0x67947d2c) is the XOR with the AES output, so the
    /// second spelling is a typo and the example is otherwise consistent.
    #[test]
    fn the_drafts_worked_example() {
        let key = Key::new(hex("fdf726a9893ec05c0632d3956680baf0").try_into().unwrap());
        let plaintext = hex("31441a9c69c275");
        let shape = Shape::of(plaintext.len());
        let (left, right) = shape.split(&plaintext);
        assert_eq!(left[..4], hex("31441a90")[..]);
        assert_eq!(right[..4], hex("0c69c275")[..]);
        assert_eq!(key.round(7, 1, &left, 4).to_vec(), hex("a255dd8cdacf01948d3a848c3c7fee23"));
        let mut out = [0u8; 7];
        key.four_pass_encrypt(&plaintext, &mut out);
        assert_eq!(out.to_vec(), hex("67947d29be054a"));
        let mut back = [0u8; 7];
        key.four_pass_decrypt(&out, &mut back, false);
        assert_eq!(back.to_vec(), plaintext);
        let mut prefix = [0u8; 7];
        key.four_pass_decrypt(&out, &mut prefix, true);
        assert_eq!(prefix[..3], plaintext[..3]);
    }

    #[test]
    fn debug_hides_the_key() {
        let key = Key::new([0x42; 16]);
        assert_eq!(format!("{key:?}"), "Key(<redacted>)");
    }
}
