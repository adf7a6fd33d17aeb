OK_FORMAT = True

test = {   'name': 'q1',
    'points': 2,
    'suites': [   {   'cases': [{'code': '>>> from helpers.course.checks import lab00, say\n>>> say(lab00.q1(n_tokens, tokens_per_word, tokenizer))\n', 'hidden': False, 'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
