OK_FORMAT = True

test = {   'name': 'q2',
    'points': 2,
    'suites': [   {   'cases': [{'code': '>>> from helpers.course.checks import lab00, say\n>>> say(lab00.q2(reply, model, tokenizer))\n', 'hidden': False, 'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
