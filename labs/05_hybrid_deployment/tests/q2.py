OK_FORMAT = True

test = {   'name': 'q2',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': ">>> assert monthly_api_bill is not ..., 'not done yet: set monthly_api_bill'\n>>> assert monthly_api_bill > 0, 'a bill in USD, above zero'\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
