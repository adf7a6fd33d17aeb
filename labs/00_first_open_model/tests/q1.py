OK_FORMAT = True

test = {   'name': 'q1',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure\n'
                                               '>>> _words = len(TICKET.split())\n'
                                               ">>> first_failure((lambda: n_tokens is not ... and tokens_per_word is not ..., 'not done yet: set n_tokens and tokens_per_word'), (lambda: "
                                               "isinstance(n_tokens, int) and n_tokens > 0, lambda: f'n_tokens should be a positive whole number, got {n_tokens!r}'), (lambda: n_tokens != _words, "
                                               'f"{_words} is the number of words: count the tokenizer\'s tokens instead"), (lambda: n_tokens != len(TICKET), f"{len(TICKET)} is the number of '
                                               'characters: count the tokenizer\'s tokens instead"), (lambda: abs(tokens_per_word - n_tokens / _words) < 0.01, lambda: f\'tokens per word = n_tokens / '
                                               "words ({_words} words here), got {tokens_per_word!r}'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
