OK_FORMAT = True

test = {   'name': 'q3',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': ">>> assert nf4_increase is not ... and why is not ..., 'not done yet: set nf4_increase and why'\n"
                                               ">>> assert why in ('a', 'b', 'c'), 'why is one letter: a, b or c'\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
