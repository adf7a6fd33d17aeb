OK_FORMAT = True

test = {   'name': 'q2',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': ">>> assert mini_break_even is not ..., 'not done yet: set mini_break_even'\n"
                                               ">>> assert mini_break_even is None or mini_break_even > 0, 'a volume in conversations per month, or None'\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
