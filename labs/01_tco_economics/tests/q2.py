OK_FORMAT = True

test = {   'name': 'q2',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure\n'
                                               ">>> first_failure((lambda: mini_break_even is not ..., 'not done yet: set mini_break_even'), (lambda: mini_break_even is None or mini_break_even > 0, "
                                               "lambda: f'a volume in conversations per month, or None, got {mini_break_even!r}'), (lambda: mini_break_even is None or mini_break_even > 1000, lambda: "
                                               "f'conversations per month, not millions or thousands of them: got {mini_break_even!r}'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
