"""Lab 03's tuned model as a GGUF file that llama.cpp, Ollama and LM Studio load, written with the official
``gguf`` package (ggml-org's gguf-py: ``GGUFWriter`` and ``gguf.quants``, bit-exact with llama.cpp's own Q8_0 and
Q4_0 per its tests), so no llama.cpp build is needed.

What llama.cpp's own converter (``convert_hf_to_gguf.py``) does, and this module does the same way:

- **q/k permutation**: transformers stores the rotary halves of each attention head split ("rotate_half"),
  llama.cpp's kernels want them interleaved, so the q and k projections are permuted per head (the GGUF loader in
  transformers undoes it on load);
- **tied embeddings**: a model whose output layer *is* its token embedding (SmolLM2) writes no ``output.weight``;
- **norms in F32**: 1-D tensors stay float32; 2-D matrices are quantized in blocks of 32 along their rows;
- **the tokenizer in the file**: vocabulary, token types, BPE merges, special-token ids and the chat template, read
  from the model's own tokenizer files the way llama.cpp's converter reads them (the embedded model's shipped GGUF
  holds the same, which tests/test_gguf_export.py checks field by field).

Q4_0 keeps the token embedding (which is also the output layer of a tied model) at Q8_0: llama.cpp's own
quantizer keeps the output tensor at higher precision for the same reason (the last layer's error is not averaged
away by any later one). K-quants (Q4_K_M) cannot be written from Python.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

QUANT_TYPES = ("Q8_0", "Q4_0")
# every type gguf-py quantizes bit-exactly as llama.cpp does (its own tests), that this module writes
WRITABLE = ("Q8_0", "Q5_1", "Q4_1", "Q4_0")
# the architectures written here, and what the error says for the others
WRITTEN = {"LlamaForCausalLM": "llama"}
# llama.cpp picks its pre-tokenizer (how text is split before BPE) by name; the models this kit writes
PRE_TOKENIZERS = {"HuggingFaceTB/SmolLM2": "smollm", "meta-llama/Llama-3": "llama-bpe", "meta-llama/Meta-Llama-3": "llama-bpe"}
OTHER_ROUTE = ("llama.cpp's own converter writes other architectures: python convert_hf_to_gguf.py <merged folder> "
               "--outtype q8_0 (from a llama.cpp checkout); on a GPU tier, serve the merged folder with vLLM instead")


class ExportError(InputError):
    """The model cannot be written as GGUF here; the message names the alternative."""


@dataclass
class GGUFExport:
    path: Path
    quant: str
    size_mb: float
    predicted_mb: float
    tensors: int

    @property
    def size_ratio(self) -> float:
        """File size over the catalog estimator's prediction of the weights (metadata and tokenizer are the rest)."""
        return self.size_mb / self.predicted_mb


def _permute(weights, heads: int):
    """llama.cpp's q/k permutation: per head, the two rotary halves interleaved."""
    return weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def _rope_theta(config: dict) -> float:
    return float((config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta", 10000.0)))


def pre_tokenizer(source: str) -> str:
    for prefix, name in PRE_TOKENIZERS.items():
        if source.startswith(prefix):
            return name
    raise ExportError(f"no llama.cpp pre-tokenizer name is known for {source!r}", fix=OTHER_ROUTE)


def _vocabulary(folder: Path, vocab_size: int):
    """Tokens, token types and the special-token/merges record, as llama.cpp's converter builds them for a BPE
    ("gpt2") tokenizer: unused ids padded, added special tokens CONTROL, other added tokens USER_DEFINED."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif token in added:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if decoder[index].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.NORMAL)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=len(tokens))
    return tokens, types, special, tokenizer


def predicted_mb(spec, quant: str) -> float:
    """The catalog estimator's weight bytes for ``spec`` (a catalog key or ModelSpec) at this GGUF type, in MB."""
    from ..catalog import estimate_weights_bytes, get_model

    spec = get_model(spec) if isinstance(spec, str) else spec
    return estimate_weights_bytes(spec, f"gguf-{quant.lower()}") / 1e6


def export_gguf(folder: str | Path, out: str | Path, quant: str = "Q8_0", model: str = "smollm2-135m",
                name: str = "support-desk triage", source: str | None = None) -> GGUFExport:
    """Write the merged model in ``folder`` (safetensors + tokenizer, as Lab 03 exports it) to ``out`` as GGUF.

    ``model``: its catalog key (the plan's), for the size the estimator predicts. ``source``: the hub id the model came from (its pre-tokenizer name follows from it; default: the config's
    ``_name_or_path`` or, for the embedded model, SmolLM2's).
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    folder, out = Path(folder), Path(out)
    quant = quant.upper()
    if quant not in WRITABLE:
        raise ExportError(f"GGUF type {quant!r} is not written here", fix=f"use one of {', '.join(WRITABLE)} (K-quants need llama.cpp's llama-quantize)")
    if not (folder / "config.json").exists():
        raise ExportError(f"{folder} holds no model (config.json is missing)", fix="export the merged model first (Lab 03, section 7)")
    config = json.loads((folder / "config.json").read_text())
    architecture = (config.get("architectures") or ["?"])[0]
    if architecture not in WRITTEN:
        raise ExportError(f"{architecture} is not written as GGUF by this kit (it writes {', '.join(WRITTEN)})", fix=OTHER_ROUTE)
    from ..catalog import get_model

    spec = get_model(model)
    pre = pre_tokenizer(source or spec.hub_id)

    heads, kv_heads, layers = config["num_attention_heads"], config["num_key_value_heads"], config["num_hidden_layers"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    tokens, types, special, tokenizer = _vocabulary(folder, config["vocab_size"])

    weights = {}
    for file in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(file))
    if not weights:
        raise ExportError(f"no .safetensors weights in {folder}", fix="export the merged model with merge_and_export first")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    wanted = getattr(gguf.GGMLQuantizationType, quant)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name(name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(layers)
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_file_type(getattr(gguf.LlamaFileType, f"MOSTLY_{quant}"))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special.add_to_gguf(writer)  # merges, bos/eos/unk/pad ids, add_bos/add_eos, the chat template
    if "bos" not in special.add_special_token:  # said explicitly, as the tokenizer behaves
        first = tokenizer("a")["input_ids"][:1]
        writer.add_add_bos_token(tokenizer.bos_token_id is not None and first == [tokenizer.bos_token_id])
    writer.add_add_space_prefix(False)  # byte-level BPE: spaces are part of the tokens

    tied = config.get("tie_word_embeddings", False)
    count = 0
    for hf_name in sorted(weights):
        if tied and hf_name == "lm_head.weight":
            continue  # the output layer is the token embedding: llama.cpp reads it from token_embd
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ExportError(f"no GGUF name for tensor {hf_name!r}", fix=OTHER_ROUTE)
        data = weights[hf_name].astype(np.float32)
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, kv_heads)
        if data.ndim == 1:
            writer.add_tensor(gguf_name, data)  # norms stay F32
        else:
            kind = gguf.GGMLQuantizationType.Q8_0 if gguf_name == "token_embd.weight" else wanted
            writer.add_tensor(gguf_name, gguf.quants.quantize(data, kind), raw_dtype=kind)
        count += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return GGUFExport(out, quant, out.stat().st_size / 1e6, predicted_mb(spec, quant), count)


# ---------------------------------------------------------------- Ollama
# the chat formats the kit's models use, as Ollama's Go templates (Ollama does not run Jinja chat templates)
CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
LLAMA3 = """{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>

"""
FORMATS = {"<|im_start|>": (CHATML, ["<|im_end|>", "<|im_start|>"]), "<|start_header_id|>": (LLAMA3, ["<|eot_id|>"])}


def modelfile(gguf_file: str | Path, chat_template: str, system: str | None = None, context: int = 2048) -> str:
    """An Ollama Modelfile for ``gguf_file``: its chat format as Ollama's template, the end-of-turn stop tokens,
    greedy decoding (the triage answers are evaluated greedily) and the context the kit serves with."""
    for marker, (template, stops) in FORMATS.items():
        if marker in chat_template:
            break
    else:
        raise ExportError("the model's chat template is neither ChatML nor Llama 3's: no Ollama template is written for it",
                          fix="write the TEMPLATE by hand from the model's chat_template (ollama.com/docs: Modelfile)")
    lines = [f"FROM ./{Path(gguf_file).name}", f'TEMPLATE """{template}"""']
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    # greedy, as Lab 03 measured: Ollama's own defaults (temperature 0.8, repeat penalty 1.1) change the tuned answers
    lines += ["PARAMETER temperature 0", "PARAMETER repeat_penalty 1", f"PARAMETER num_ctx {context}"]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    return "\n".join(lines) + "\n"


def write_modelfile(gguf_file: str | Path, chat_template: str, system: str | None = None, context: int = 2048) -> Path:
    path = Path(gguf_file).with_name("Modelfile")
    path.write_text(modelfile(gguf_file, chat_template, system, context))
    return path


# ---------------------------------------------------------------- Lab 03: export, then prove the files
def take_away(folder: str | Path, plan, tokenizer, rows: list[dict], reference, out_dir: str | Path,
              quants: tuple[str, ...] = QUANT_TYPES, progress: bool = True):
    """Write the tuned model in ``folder`` as GGUF at each of ``quants`` into ``out_dir`` with an Ollama Modelfile
    (for the first), then prove each file: loaded back by transformers' GGUF loader, greedy replies on ``rows``
    compared with ``reference`` (the tuned model's own replies on those rows, ``ft.predict``'s list), the triage
    accuracy with its interval, the share of replies that stop, and the size against the catalog estimator.

    Returns ``(table, modelfile path)``; on a model this kit does not write (the GPU tiers' Qwen2.5), raises
    :class:`ExportError`, whose fix names llama.cpp's converter and vLLM.
    """
    import pandas as pd

    from ..models import load_gguf_file
    from .lora import SHORT_PROMPT, evaluate, parse_prediction, predict, stop_share

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    messages = [row["message"] for row in rows]
    table, files = [], {}
    for quant in quants:
        export = export_gguf(folder, out_dir / f"model-{quant.lower()}.gguf", quant, model=plan.model)
        files[quant] = export.path
        back = load_gguf_file(export.path, device=plan.device)
        replies = predict(back, tokenizer, messages, schema=False, progress=progress)
        del back
        scores = evaluate(replies, rows)
        same = [a == b for a, b in zip(replies, reference)]
        same_triage = [parse_prediction(a) is not None and parse_prediction(a) == parse_prediction(b) for a, b in zip(replies, reference)]
        stops = stop_share(replies)
        table.append({"GGUF": quant, "file MB": export.size_mb, "estimator MB": export.predicted_mb,
                      "file / estimate": export.size_ratio, "same reply": sum(same) / len(same),
                      "same triage": sum(same_triage) / len(same_triage), "category": scores.loc["category", "rate"],
                      "category low": scores.loc["category", "low"], "category high": scores.loc["category", "high"],
                      "replies that stop": stops["share"]})
    table = pd.DataFrame(table).set_index("GGUF")
    chosen = recommend(table)
    # the model's own context, not the lab's short training rows: a long customer message must fit
    modelfile_path = write_modelfile(files[chosen or quants[0]], tokenizer.chat_template, system=SHORT_PROMPT, context=max(plan.context, 2048))
    share = table.loc[chosen or quants[0], "same triage"]
    verdict = (f"{PROVEN} same triage as the tuned model on {share:.0%} of {len(rows)} test rows" if chosen else
               f"# NOT PROVEN: same triage on {share:.0%} of {len(rows)} test rows, under {SAME_TRIAGE_BAR:.0%}: serve the merged folder")
    modelfile_path.write_text(verdict + "\n" + modelfile_path.read_text())
    return table, modelfile_path


PROVEN = "# proven:"  # the Modelfile's first line when its file keeps the tuned triage (the local server looks for it)


def proven_gguf(model_dir: str | Path) -> Path | None:
    """The GGUF file Lab 03 proved for the merged model in ``model_dir``: named by the Modelfile in the ``gguf`` folder
    beside it, that Modelfile saying "proven", and written after the merged folder (not a file of an earlier run)."""
    model_dir = Path(model_dir)
    modelfile = model_dir.parent / "gguf" / "Modelfile"
    config = model_dir / "config.json"
    if not modelfile.is_file() or not config.is_file():
        return None
    lines = modelfile.read_text().splitlines()
    source = next((line.removeprefix("FROM ./") for line in lines if line.startswith("FROM ./")), None)
    if not lines or not lines[0].startswith(PROVEN) or source is None:
        return None
    gguf = modelfile.parent / source
    return gguf if gguf.is_file() and gguf.stat().st_mtime >= config.stat().st_mtime else None


def tuning_survival(base: str | Path, tuned: str | Path, quants: tuple[str, ...] = WRITABLE):
    """What each GGUF type's rounding leaves of the tuning: over every 2-D weight matrix the tuning changed in the merged
    ``tuned`` folder (all of them after LoRA on every layer; only the trained layers' after full fine-tuning of the top
    layers: rounding a matrix the tuning never touched says nothing about the tuning) against the ``base`` model's
    folder, the tuning's own size (||tuned - base|| / ||base||), the share of its
    direction the rounded file keeps (the projection of file - base on tuned - base, over ||tuned - base||^2: 1 keeps
    it all, 0 is the base model again) and the rounding error against the tuning (||file - tuned|| / ||tuned - base||:
    above 1 the noise is larger than what training changed). One row per type, the matrices pooled."""
    import gguf
    import numpy as np
    import pandas as pd
    from safetensors.numpy import load_file

    def weights(folder):
        found = {}
        for file in sorted(Path(folder).glob("*.safetensors")):
            found.update(load_file(file))
        if not found:
            raise ExportError(f"no .safetensors weights in {folder}", fix="export the merged model with merge_and_export first")
        return found

    before, after = weights(base), weights(tuned)
    names = [n for n in sorted(after) if after[n].ndim == 2 and n in before and n != "lm_head.weight" and "embed" not in n
             and not np.array_equal(after[n], before[n])]
    rows = []
    for quant in quants:
        kind = getattr(gguf.GGMLQuantizationType, quant.upper())
        tuning = kept = error = base_norm = 0.0
        for name in names:
            b, t = before[name].astype(np.float32), after[name].astype(np.float32)
            back = gguf.quants.dequantize(gguf.quants.quantize(t, kind), kind).reshape(t.shape)
            delta = (t - b).ravel()
            tuning += float(delta @ delta)
            kept += float((back - b).ravel() @ delta)
            error += float(np.sum((back - t) ** 2))
            base_norm += float(np.sum(b ** 2))
        if tuning == 0 or not names:
            raise ExportError(f"{tuned} holds the base model's weights unchanged: there is no tuning to keep",
                              fix="pass the merged folder Lab 03 wrote after training (results.artifact('03', 'merged'))")
        rows.append({"GGUF": quant.upper(), "tuning / weights": (tuning / base_norm) ** 0.5, "tuning kept": kept / tuning,
                     "rounding error / tuning": (error / tuning) ** 0.5, "matrices": len(names)})
    return pd.DataFrame(rows).set_index("GGUF")


def recorded_layouts():
    """The course's recorded comparison of GGUF types on Lab 03's tuned CPU-tier model (``scripts/gguf_layouts.py``),
    or None if none was recorded."""
    import pandas as pd

    from ..paths import DATASETS

    path = DATASETS / "results" / "gguf_layouts.csv"
    return pd.read_csv(path).set_index("GGUF") if path.exists() else None


def layouts_reading(table) -> list[str]:
    """One line per GGUF type of a :func:`recorded_layouts` table (or a learner's own ``take_away`` table joined with
    :func:`tuning_survival`): what its rounding does to the tuning, and what that did to the triage."""
    lines = []
    for quant, row in table.iterrows():
        error, kept = row["rounding error / tuning"], row["tuning kept"]
        if kept < 0.25:
            effect = "mostly the base model again"
        elif error < 1:
            effect = "the tuning, with rounding smaller than it"
        else:
            effect = "the tuning buried under rounding larger than it"
        rows = f" of {int(row['rows'])} rows" if "rows" in row else ""
        lines.append(f"{quant}: moved from the base model {kept:.2f} along the tuning (1: all of it, 0: none), rounding error "
                     f"{error:.1f} x the tuning ({effect}); "
                     f"same triage as the tuned model on {row['same triage']:.0%}{rows}")
    first = table.iloc[0]
    lines.append(f"the tuning moved the weights by {first['tuning / weights']:.1%} of their size: a file keeps it only where its "
                 "rounding is smaller than that")
    return lines


# A file that changes more than 1 triage in 4 of the tuned model's is not the model you tuned. Not stricter: a 135M
# model answers many rows on near-ties, and Q8_0's rounding (~0.4 % per weight) flips some of them; measured 81-94 %
# same triage on 12-32 test rows across runs here, LoRA-tuned and fully tuned models alike (Q4_0: 0-9 %, a different
# model; datasets/results/gguf_layouts.csv).
SAME_TRIAGE_BAR = 0.75


def recommend(table, bar: float = SAME_TRIAGE_BAR) -> str | None:
    """The smallest file whose replies give the tuned model's triage on at least ``bar`` of the rows, or None."""
    passing = table[table["same triage"] >= bar]
    return None if passing.empty else str(passing["file MB"].idxmin())


def how_to_run(modelfile_path: str | Path, name: str = "support-desk") -> str:
    """The commands that take the exported model elsewhere, with this run's paths, each set to greedy sampling
    (temperature 0, repeat penalty 1). These servers sample at temperature 0.8 by default, and Ollama and
    llama-cpp-python's server add a repeat penalty of 1.1: served that way, the tuned model's proven Q8_0 file gave its
    own triage on 1 of 12 tickets (issue 35), against 12 of 12 greedy."""
    folder = Path(modelfile_path).parent
    first = folder / next(line for line in Path(modelfile_path).read_text().splitlines() if line.startswith("FROM ./")).removeprefix("FROM ./")
    return (f"Ollama:     cd {folder} && ollama create {name} -f Modelfile && ollama run {name}\n"
            f"llama.cpp:  llama-server -m {first} --host 127.0.0.1 --port 8080 --temp 0 --repeat-penalty 1   (an OpenAI-compatible endpoint)\n"
            f"LM Studio:  lms import {first}   (or drag the .gguf file into the app; set temperature 0 and repeat penalty 1)")
