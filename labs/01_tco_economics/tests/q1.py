OK_FORMAT = True

test = {   'name': 'q1',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure\n'
                                               ">>> _price = tco.api_prices()['gpt-4o-mini']\n"
                                               '>>> _tokens = 2000000 * (900 + 250) / 1000000.0\n'
                                               ">>> first_failure((lambda: my_monthly_api_fees is not ..., 'not done yet: set my_monthly_api_fees'), (lambda: isinstance(my_monthly_api_fees, (int, "
                                               "float)) and my_monthly_api_fees > 0, lambda: f'a positive number of USD, got {my_monthly_api_fees!r}'), (lambda: my_monthly_api_fees <= _tokens * "
                                               "_price.output, lambda: f'too much for a month of these tokens (a year? staff?): got {my_monthly_api_fees:,.0f} USD'), (lambda: my_monthly_api_fees >= "
                                               "_tokens * _price.input, lambda: f'too little for a month of these tokens (one conversation? one turn?): got {my_monthly_api_fees:,.2f} USD'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
