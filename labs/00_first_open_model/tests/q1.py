OK_FORMAT = True

test = {   'name': 'q1',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': ">>> assert n_tokens is not ... and tokens_per_word is not ..., 'not done yet: set n_tokens and tokens_per_word'\n"
                                               ">>> assert isinstance(n_tokens, int) and n_tokens > 0, 'n_tokens should be a positive whole number'\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
