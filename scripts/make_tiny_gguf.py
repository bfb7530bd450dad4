#!/usr/bin/env python3
"""Write a tiny random-weight llama-architecture GGUF model that llama.cpp's llama-server loads.

homeostat's tests run a real llama-server; they need a model, and nothing may be downloaded from a
model hub. This script writes one from nothing, with the `gguf` package (the writer llama.cpp itself
uses) and numpy. The same arguments always give the same bytes (the weights come from a seeded RNG).

    python make_tiny_gguf.py OUT.gguf [--seed 0] [--name tiny-llama] [--layers 2] [--embd 64]
                             [--heads 4] [--kv-heads 4] [--ffn 128] [--ctx 2048] [--dtype f32|f16]
                             [--eos-logit -60]
    python make_tiny_gguf.py OUT.gguf --broken [--seed 0]

--broken writes 64 KiB of seeded random bytes instead: a corrupt model file that llama-server refuses
(`invalid magic characters`), for tests of a model that fails to load.

What the file holds, and why:
- Architecture `llama` with the hyper-parameters the loader requires (context, embedding, blocks,
  feed-forward, heads, kv heads, rope dimension and base, RMS-norm epsilon, vocabulary size).
- A SentencePiece ("llama") vocabulary: <unk>=0, <s>=1 (BOS), </s>=2 (EOS), <|im_start|>=3,
  <|im_end|>=4 (EOT), then ALL 256 byte tokens <0x00>..<0xFF> (the loader needs them for byte
  fallback and to find the newline token), then printable characters, the same with the word
  marker U+2581, and a few whole words. Any UTF-8 prompt therefore tokenizes.
- A ChatML chat template, so /v1/chat/completions formats messages.
- Random weights, with one trick: dimension 0 of every token embedding is a constant +4. The random
  layers barely change it, so after the final RMS norm hidden[0] is about +3.6 for every position,
  and column 0 of output.weight acts as a per-token logit bias. Every token that is not a normal
  text piece (unknown, control, byte) gets a bias of about -60, so sampled output is always
  printable ASCII. Without it the model emits lone byte tokens, the text is invalid UTF-8, and
  llama-server answers HTTP 500 ("model produced output that does not match the expected ... format").
  EOS and EOT get --eos-logit (default -60: never stop early, so every request generates exactly
  max_tokens / n_predict tokens and token counts are deterministic).
"""

import argparse
import string
import sys

import gguf
import numpy as np

# hidden[0] after the final RMS norm, for the +4 constant in embedding dimension 0 (measured ~3.6).
HIDDEN0_AFTER_NORM = 3.6
# The logit bias given to tokens that must never be sampled.
FORBIDDEN_LOGIT = -60.0

ID_UNK, ID_BOS, ID_EOS, ID_IM_START, ID_IM_END = 0, 1, 2, 3, 4

WORDS = [
    "the", "and", "is", "of", "to", "in", "it", "ok", "yes", "no",
    "hello", "world", "model", "server", "health", "tiny", "llama", "test",
]

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def vocabulary():
    """(tokens, scores, types) of the SentencePiece vocabulary described in the module doc."""
    kinds = gguf.TokenType
    tokens, scores, types = [], [], []

    def add(piece, score, kind):
        tokens.append(piece)
        scores.append(score)
        types.append(kind)

    add("<unk>", 0.0, kinds.UNKNOWN)
    add("<s>", 0.0, kinds.CONTROL)
    add("</s>", 0.0, kinds.CONTROL)
    add("<|im_start|>", 0.0, kinds.CONTROL)
    add("<|im_end|>", 0.0, kinds.CONTROL)
    for byte in range(256):
        add(f"<0x{byte:02X}>", 0.0, kinds.BYTE)

    # SentencePiece prefers pieces with higher scores when merging: single characters score low,
    # whole words higher, so "hello" becomes one token rather than five.
    score = -1.0
    add("\u2581", score, kinds.NORMAL)
    printable = string.ascii_letters + string.digits + string.punctuation
    for prefix in ("", "\u2581"):
        for char in printable:
            score -= 0.01
            add(prefix + char, score, kinds.NORMAL)
    for word in WORDS:
        score -= 0.01
        add("\u2581" + word, score + 0.5, kinds.NORMAL)
        add(word, score + 0.4, kinds.NORMAL)
    return tokens, scores, types


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="path of the .gguf file to write")
    parser.add_argument("--seed", type=int, default=0, help="RNG seed of the weights")
    parser.add_argument("--name", default="tiny-llama", help="general.name")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embd", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--ffn", type=int, default=128)
    parser.add_argument("--ctx", type=int, default=2048, help="training context length")
    parser.add_argument("--dtype", choices=["f32", "f16"], default="f32",
                        help="weight type (the prebuilt llama-server only runs F32/F16 on AMD CPUs)")
    parser.add_argument("--eos-logit", type=float, default=FORBIDDEN_LOGIT,
                        help="logit bias of EOS/EOT: -60 never stops early, about 0 stops at random")
    parser.add_argument("--broken", action="store_true",
                        help="write 64 KiB of random bytes (a corrupt model) instead of a model")
    args = parser.parse_args(argv)
    if args.embd % args.heads != 0:
        parser.error("--embd must be a multiple of --heads")
    if args.heads % args.kv_heads != 0:
        parser.error("--heads must be a multiple of --kv-heads")
    return args


def write_model(args):
    rng = np.random.default_rng(args.seed)
    dtype = np.float32 if args.dtype == "f32" else np.float16
    head_dim = args.embd // args.heads
    kv_dim = head_dim * args.kv_heads
    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)

    def normal(rows, cols, std):
        return rng.standard_normal((rows, cols)).astype(np.float32) * np.float32(std)

    writer = gguf.GGUFWriter(args.out, "llama")
    writer.add_name(args.name)
    writer.add_context_length(args.ctx)
    writer.add_embedding_length(args.embd)
    writer.add_block_count(args.layers)
    writer.add_feed_forward_length(args.ffn)
    writer.add_head_count(args.heads)
    writer.add_head_count_kv(args.kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(
        gguf.LlamaFileType.ALL_F32 if args.dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16
    )

    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(ID_UNK)
    writer.add_bos_token_id(ID_BOS)
    writer.add_eos_token_id(ID_EOS)
    writer.add_eot_token_id(ID_IM_END)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHATML)

    # numpy shapes are (rows, cols), the reverse of ggml's ne: token_embd has ne = [n_embd, n_vocab].
    embedding = normal(n_vocab, args.embd, 1.0)
    embedding[:, 0] = 4.0
    output = normal(n_vocab, args.embd, 0.5)
    output[:, 0] = 0.0
    for token_id, kind in enumerate(types):
        if kind != gguf.TokenType.NORMAL:
            output[token_id, 0] = FORBIDDEN_LOGIT / HIDDEN0_AFTER_NORM
    for token_id in (ID_EOS, ID_IM_END):
        output[token_id, 0] = args.eos_logit / HIDDEN0_AFTER_NORM

    ones = np.ones(args.embd, dtype=np.float32)  # norm weights stay F32, as llama.cpp writes them
    writer.add_tensor("token_embd.weight", embedding.astype(dtype))
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", output.astype(dtype))
    for layer in range(args.layers):
        prefix = f"blk.{layer}."
        writer.add_tensor(prefix + "attn_norm.weight", ones)
        writer.add_tensor(prefix + "attn_q.weight", normal(args.embd, args.embd, 0.02).astype(dtype))
        writer.add_tensor(prefix + "attn_k.weight", normal(kv_dim, args.embd, 0.02).astype(dtype))
        writer.add_tensor(prefix + "attn_v.weight", normal(kv_dim, args.embd, 0.02).astype(dtype))
        writer.add_tensor(prefix + "attn_output.weight", normal(args.embd, args.embd, 0.02).astype(dtype))
        writer.add_tensor(prefix + "ffn_norm.weight", ones)
        writer.add_tensor(prefix + "ffn_gate.weight", normal(args.ffn, args.embd, 0.02).astype(dtype))
        writer.add_tensor(prefix + "ffn_up.weight", normal(args.ffn, args.embd, 0.02).astype(dtype))
        writer.add_tensor(prefix + "ffn_down.weight", normal(args.embd, args.ffn, 0.02).astype(dtype))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return n_vocab


BROKEN_SIZE = 64 * 1024


def write_broken(args):
    data = np.random.default_rng(args.seed).integers(0, 256, BROKEN_SIZE, dtype=np.uint8).tobytes()
    if data[:4] == b"GGUF":  # cannot happen with a fixed seed, but a corrupt file must stay corrupt
        data = b"\x00" + data[1:]
    with open(args.out, "wb") as out:
        out.write(data)


def main(argv):
    args = parse_args(argv)
    if args.broken:
        write_broken(args)
        print(f"wrote {args.out}: {BROKEN_SIZE} random bytes (seed={args.seed}), not a GGUF model")
        return
    n_vocab = write_model(args)
    print(
        f"wrote {args.out}: name={args.name} seed={args.seed} vocab={n_vocab} layers={args.layers} "
        f"embd={args.embd} heads={args.heads} ffn={args.ffn} dtype={args.dtype}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
