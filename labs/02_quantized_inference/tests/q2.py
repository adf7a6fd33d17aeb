OK_FORMAT = True

test = {   'name': 'q2',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': ">>> assert largest_on_l4 is not ..., 'not done yet: set largest_on_l4'\n"
                                               '>>> assert largest_on_l4 in catalog(), "a catalog key, e.g. \'qwen2.5-7b\'"\n',
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
