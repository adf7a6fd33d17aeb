OK_FORMAT = True

test = {   'name': 'q1',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': ">>> assert my_monthly_api_fees is not ..., 'not done yet: set my_monthly_api_fees'\n"
                                               ">>> assert isinstance(my_monthly_api_fees, (int, float)) and my_monthly_api_fees > 0, 'a positive number of USD'\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
