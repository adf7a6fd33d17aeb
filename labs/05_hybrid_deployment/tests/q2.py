OK_FORMAT = True

test = {   'name': 'q2',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure\n'
                                               ">>> _tin, _tout = (paid_rows['tokens_in'].mean(), paid_rows['tokens_out'].mean())\n"
                                               '>>> _near = lambda value: abs(monthly_api_bill - value) <= 0.01 * abs(value)\n'
                                               ">>> first_failure((lambda: monthly_api_bill is not ..., 'not done yet: set monthly_api_bill'), (lambda: isinstance(monthly_api_bill, (int, float)) and "
                                               "monthly_api_bill > 0, lambda: f'a bill in USD, above zero: got {monthly_api_bill!r}'), (lambda: not _near(10000000 * (_tin * prices[0] + _tout * "
                                               "prices[1]) / 1000000.0), 'that bills all 10M conversations: only 30 % go to the paid API'), (lambda: not _near(3000000 * (_tin * prices[1] + _tout * "
                                               "prices[0]) / 1000000.0), 'input tokens are billed at the input price (prices[0]) and output tokens at the output price (prices[1])'), (lambda: "
                                               "monthly_api_bill < 3000000 * (_tin + _tout) * max(prices) / 1000000.0 * 10, lambda: f'far too much: prices are USD per 1M tokens (divide by 1e6); got "
                                               "{monthly_api_bill:,.0f} USD'), (lambda: monthly_api_bill > 3000000 * (_tin + _tout) * min(prices) / 1000000.0 / 10, lambda: f'far too little for 3M "
                                               "conversations a month (a day? one conversation?): got {monthly_api_bill:,.2f} USD'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
