"""Golden pre-norm hidden states from Hugging Face transformers, for `tests/embed.rs`.

The decoders' last `hidden_states` entry in transformers is after the final norm (GPT-2's `ln_f`,
Llama's and Qwen2's `norm`); the last block's own output is reached with a forward hook on that
block. This script writes, per checkpoint, one row per token: `seq_id`, `position`, `token_id`,
`hidden_L<n>` (transformers' last entry, after the norm) and `hidden_L<n>_prenorm` (the hook's).
It checks on the way that the final norm applied to the hooked output gives the last entry.

Run (torch 2.15 and transformers 5.24 in a venv of their own; not part of CI):
    python tools/goldens/prenorm.py ../shared/fixtures tests/goldens
"""

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tokenizers
import torch
import transformers
from transformers import AutoModel, AutoTokenizer


def last_block_and_norm(model):
    """The module whose output is the pre-norm state, and the final norm."""
    base = getattr(model, "transformer", None) or getattr(model, "model", None) or model
    if hasattr(base, "h"):
        return base.h[-1], base.ln_f
    return base.layers[-1], base.norm


def embed(ckpt: Path, texts, seq_ids, max_length=None, plain_tokenizer=False):
    if plain_tokenizer:
        # The grokking run's WordLevel tokenizer, as it was trained with: `AutoTokenizer` in
        # transformers 5 splits "17" into "1", "7" for it.
        raw = tokenizers.Tokenizer.from_file(str(ckpt / "tokenizer.json"))
        tok = lambda t, **_: {"input_ids": torch.tensor([raw.encode(t).ids])}
    else:
        tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModel.from_pretrained(ckpt, torch_dtype=torch.float32).eval()
    block, norm = last_block_and_norm(model)
    grabbed = {}
    hook = block.register_forward_hook(lambda m, i, o: grabbed.__setitem__("x", o[0] if isinstance(o, tuple) else o))
    n = model.config.num_hidden_layers
    rows = {"seq_id": [], "position": [], "token_id": [], f"hidden_L{n}": [], f"hidden_L{n}_prenorm": []}
    worst = 0.0
    with torch.no_grad():
        for s, t in zip(seq_ids, texts):
            enc = tok(t, return_tensors="pt", truncation=max_length is not None, max_length=max_length)
            out = model(**enc, output_hidden_states=True)
            pre = grabbed["x"][0]
            post = out.hidden_states[-1][0]
            worst = max(worst, float((norm(pre) - post).abs().max()))
            ids = enc["input_ids"][0].tolist()
            for p, i in enumerate(ids):
                rows["seq_id"].append(int(s))
                rows["position"].append(p)
                rows["token_id"].append(int(i))
                rows[f"hidden_L{n}"].append(post[p].numpy().astype(np.float32))
                rows[f"hidden_L{n}_prenorm"].append(pre[p].numpy().astype(np.float32))
    hook.remove()
    assert worst < 1e-5, f"{ckpt}: the final norm of the hooked output is off by {worst}"
    d = model.config.hidden_size
    cols = {k: pa.array(v, pa.int64() if k == "seq_id" else pa.int32()) for k, v in rows.items() if not k.startswith("hidden")}
    for k, v in rows.items():
        if k.startswith("hidden"):
            cols[k] = pa.FixedSizeListArray.from_arrays(pa.array(np.concatenate(v), pa.float32()), d)
    return pa.table(cols), worst


def main(fixtures: Path, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    meta = json.loads((fixtures / "embed/embed_golden.json").read_text())
    texts = pq.read_table(fixtures / "minilm_fortunes_texts.parquet").to_pydict()
    by_id = dict(zip(texts["seq_id"], texts["text"]))
    seqs = meta["_generator"]["golden_seq"][:12]
    made = {}
    for name in ["tiny-gpt2", "tiny-llama", "tiny-qwen2"]:
        table, worst = embed(fixtures / "embed/models" / name, [by_id[s] for s in seqs], seqs)
        pq.write_table(table, out / f"prenorm_{name}.golden.parquet")
        made[name] = {"rows": table.num_rows, "texts": f"seq_id {seqs} of minilm_fortunes_texts.parquet", "norm_check": worst}
    # A real checkpoint: the grokking run at step 4900, 200 of its pairs (every 17th), 4 tokens each.
    g = pq.read_table(fixtures / "grokking/texts.parquet").to_pydict()
    pick = list(range(0, len(g["text"]), 17))
    table, worst = embed(fixtures / "grokking/checkpoints/step-4900", [g["text"][i] for i in pick], [g["seq_id"][i] for i in pick], 4, plain_tokenizer=True)
    ids = table.column("token_id").to_pylist()
    want = [x for i in pick for x in (g["a"][i], 59, g["b"][i], 60)]
    assert ids == want, "grokking: tokens are not a, +, b, ="
    pq.write_table(table, out / "prenorm_grokking_step-4900.golden.parquet")
    made["grokking/step-4900"] = {"rows": table.num_rows, "texts": "every 17th row of grokking/texts.parquet", "norm_check": worst}
    made["_generator"] = {"torch": torch.__version__, "transformers": transformers.__version__, "script": "tools/goldens/prenorm.py"}
    (out / "prenorm.json").write_text(json.dumps(made, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
