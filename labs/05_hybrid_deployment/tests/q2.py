OK_FORMAT = True

test = {   'name': 'q2',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure\n'
                                               ">>> first_failure((lambda: monthly_api_bill is not ..., 'not done yet: set monthly_api_bill'), (lambda: isinstance(monthly_api_bill, (int, float)) and "
                                               "monthly_api_bill > 0, lambda: f'a bill in USD, above zero: got {monthly_api_bill!r}'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
