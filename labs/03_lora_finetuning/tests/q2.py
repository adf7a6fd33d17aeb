OK_FORMAT = True

test = {   'name': 'q2',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': ">>> assert json_gain is not ... and category_after_low is not ..., 'not done yet: set json_gain and category_after_low'\n"
                                               ">>> assert -1 <= json_gain <= 1 and 0 <= category_after_low <= 1, 'rates are between 0 and 1'\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
