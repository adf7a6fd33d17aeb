"""Lab 00's checks: count tokens (q1), the whole pipeline (q2). The lesson's texts live here, so a notebook that
edits its copy of ``TICKET`` or ``QUESTION`` is checked against the lesson's, not its own."""
from __future__ import annotations

from . import NOT_DONE, guarded, is_number, not_done, shown

TICKET = "Hello, I cannot log in to my account since this morning. Please help!"
QUESTION = "In one sentence, what does a support desk do?"
MAX_NEW_TOKENS = 30
CONTEXT: dict = {}


_REPLIES: dict = {}  # (model, tokenizer, new tokens) -> the greedy reply: a check run twice does not decode twice


def _greedy(model, tokenizer, max_new_tokens: int) -> str:
    from ...models import chat

    key = (id(model), id(tokenizer), max_new_tokens)
    if key not in _REPLIES or _REPLIES[key][0] is not model:
        if len(_REPLIES) > 8:
            _REPLIES.clear()
        _REPLIES[key] = (model, chat(model, tokenizer, QUESTION, max_new_tokens=max_new_tokens).strip())
    return _REPLIES[key][1]


def _greedy_bare(model, tokenizer, max_new_tokens: int) -> str:
    """The greedy continuation of QUESTION sent as plain text, without the chat template (the plausible wrong way)."""
    import torch

    key = ("bare", id(model), id(tokenizer), max_new_tokens)
    if key not in _REPLIES or _REPLIES[key][0] is not model:
        inputs = tokenizer(QUESTION, return_tensors="pt").to(model.device)
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
        _REPLIES[key] = (model, tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return _REPLIES[key][1]


def warm(model=None, tokenizer=None, **_) -> None:
    """What q2 computes once per process (the greedy replies it compares with), computed now: the grader calls this
    before its clock starts, so a busy machine's first submission is not the one that pays for it."""
    if model is not None and tokenizer is not None:  # what a right answer needs; the wrong kinds' replies come on demand
        _greedy(model, tokenizer, MAX_NEW_TOKENS)


def _count(tokenizer, text: str) -> int:
    return len(tokenizer(text)["input_ids"])


@guarded
def q1(n_tokens, tokens_per_word, tokenizer) -> str | None:
    if not_done(n_tokens, tokens_per_word):
        return f"{NOT_DONE}: set n_tokens and tokens_per_word"
    if not isinstance(n_tokens, int) or isinstance(n_tokens, bool) or n_tokens <= 0:
        return f"n_tokens should be a positive whole number, got {shown(n_tokens)}"
    words = len(TICKET.split())
    expected = _count(tokenizer, TICKET)
    if n_tokens != expected:
        templated = len(tokenizer.apply_chat_template([{"role": "user", "content": TICKET}], tokenize=True, return_dict=True,
                                                      add_generation_prompt=False)["input_ids"]) \
            if getattr(tokenizer, "chat_template", None) else None
        if n_tokens == words:
            return f"{words} is the number of words: count the tokenizer's tokens instead"
        if n_tokens in (len(TICKET), len(TICKET.encode())):
            return f"{n_tokens} is the number of characters: count the tokenizer's tokens instead"
        if templated is not None and n_tokens >= templated - 2 and n_tokens > expected:
            return "that count includes the chat template's markers: tokenize TICKET itself (no chat template)"
        if n_tokens == _count(tokenizer, QUESTION):
            return "that is the count for QUESTION (exercise 2): count the tokens of TICKET"
        return "not the number of tokens in the lesson's TICKET: tokenize the text exactly as given (no chat template)"
    if not is_number(tokens_per_word):
        return f"tokens_per_word should be a number, got {shown(tokens_per_word)}"
    if abs(tokens_per_word - words / n_tokens) < 0.01 and words != n_tokens:
        return "that is words per token: the ratio is the other way round"
    if abs(tokens_per_word - n_tokens / len(TICKET)) < 0.01:
        return "that is tokens per character: the question asks per word"
    if abs(tokens_per_word - 100 * n_tokens / words) < 1:
        return "tokens per word is a plain ratio, not a percentage"
    if abs(tokens_per_word - n_tokens / words) >= 0.01:
        return f"n_tokens is right; tokens_per_word ({shown(tokens_per_word)}) is not TICKET's tokens per word"
    return None


@guarded
def q2(reply, model, tokenizer) -> str | None:
    if not_done(reply):
        return f"{NOT_DONE}: set reply"
    if isinstance(reply, str) and not reply.strip() and not _greedy_bare(model, tokenizer, MAX_NEW_TOKENS):
        return ("an empty reply: this model, given the bare QUESTION without its chat template, stops at once; an "
                "instruct model answers what arrives through its chat template, with the assistant's turn opened")
    if not isinstance(reply, str) or not reply.strip():
        return f"reply should be the model's non-empty text, got {type(reply).__name__} {shown(reply)}"
    if "<|im_start|>" in reply or QUESTION in reply or reply.lstrip().startswith(("system", "user")):
        return "the reply still holds the prompt: decode only the new tokens (the ids after the prompt's length)"
    if "<|im_end|>" in reply or "<|endoftext|>" in reply:
        return "the reply holds special tokens: decode with skip_special_tokens=True"
    if reply != reply.strip():
        return "strip the surrounding spaces and newlines from the reply"
    expected = _greedy(model, tokenizer, MAX_NEW_TOKENS)
    if reply == expected:
        return None
    longer = _greedy(model, tokenizer, 2 * MAX_NEW_TOKENS)
    if len(reply) > len(expected) and longer.startswith(reply):
        return f"the reply runs past {MAX_NEW_TOKENS} new tokens: set max_new_tokens={MAX_NEW_TOKENS}"
    if expected.startswith(reply):
        return f"the reply stops early: let greedy decoding run up to {MAX_NEW_TOKENS} new tokens"
    same = next((i for i, (a, b) in enumerate(zip(reply, expected)) if a != b), min(len(reply), len(expected)))
    bare = _greedy_bare(model, tokenizer, MAX_NEW_TOKENS)
    if same < 10 and bare and (reply == bare or (len(reply) >= 10 and bare.startswith(reply[:40]))):
        return ("that is the model continuing the bare QUESTION as plain text: an instruct model answers what arrives "
                "through its chat template, with the assistant's turn opened")
    if same == 0:
        return ("not what this model says to QUESTION with greedy decoding: ask the lesson's QUESTION through the chat "
                "template, do_sample=False")
    return (f"greedy decoding agrees with your first {same} characters, then yours goes on {reply[same:same + 30]!r}: "
            "sampling (do_sample=True) or another prompt changes the words")
