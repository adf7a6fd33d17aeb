OK_FORMAT = True

test = {   'name': 'q2',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure\n'
                                               '>>> from helpers.models import chat as _chat\n'
                                               '>>> _expected = _chat(model, tokenizer, QUESTION, max_new_tokens=30) if isinstance(reply, str) else None\n'
                                               '>>> first_failure((lambda: reply is not ..., \'not done yet: set reply\'), (lambda: isinstance(reply, str) and reply.strip(), lambda: f"reply should '
                                               'be the model\'s non-empty text, got {reply!r}"), (lambda: \'<|im_start|>\' not in reply and QUESTION not in reply, "the reply still holds the prompt: '
                                               'decode only the new tokens (the ids after the prompt\'s length)"), (lambda: reply.strip() == _expected, lambda: f\'greedy decoding (do_sample=False, '
                                               "30 new tokens) says {_expected[:40]!r}..., got {reply.strip()[:40]!r}'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
